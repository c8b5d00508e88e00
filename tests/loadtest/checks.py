"""What every load-test report must satisfy, whatever the server."""

from __future__ import annotations

import pytest


def check_consistent(report: dict) -> None:
    requests = report["requests"]
    assert requests["total"] == requests["ok"] + requests["errors"]
    assert requests["errors"] == sum(report["errors_by_status"].values())
    assert report["throughput_rps"] == pytest.approx(requests["ok"] / report["duration_s"])
    for latency in (report["latency_ms"], report["error_latency_ms"]):
        values = [latency[k] for k in ("min", "p50", "p90", "p99", "p99.9", "max")]
        assert values == sorted(values)
    assert len(report["generator"]["worker_cpu_utilization"]) == report["generator"]["processes"]
