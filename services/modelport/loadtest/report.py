"""A run's numbers: throughput, latency percentiles, errors by status, generator health.

The report is plain JSON-able data; the same dict feeds the terminal table, the
`--report` file and the plots.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelport.loadtest.recorder import status_name
from modelport.loadtest.runner import RunResult, available_cpus

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))
# A worker process busy this share of its wall time could not have sent faster.
SATURATED_CPU = 0.9
# The whole machine this busy: generator processes wait for a core like everyone else.
BUSY_HOST = 0.95
# Open loop: sends this late behind schedule (p99) mean the generator fell behind.
SATURATED_LAG_MS = 5.0


def latency_summary(latencies_ns: np.ndarray) -> dict[str, float]:
    """Milliseconds; nearest-rank ('higher') percentiles, so each is a latency seen."""
    if latencies_ns.size == 0:
        return {name: 0.0 for name in ("min", "mean", *dict(PERCENTILES), "max")}
    ms = latencies_ns / 1e6
    summary = {"min": float(ms.min()), "mean": float(ms.mean())}
    for name, q in PERCENTILES:
        summary[name] = float(np.percentile(ms, q, method="higher"))
    summary["max"] = float(ms.max())
    return summary


def generator_health(result: RunResult) -> dict[str, Any]:
    """Was the load generator itself the bottleneck? CPU per worker, and schedule lag."""
    cpu = [w.cpu_s / w.wall_s if w.wall_s > 0 else 0.0 for w in result.workers]
    lags_ms = result.samples.lags_ns / 1e6
    lag_p99 = float(np.percentile(lags_ms, 99, method="higher")) if lags_ms.size else 0.0
    reasons = []
    busiest = max(cpu, default=0.0)
    if busiest >= SATURATED_CPU:
        reasons.append(
            f"a worker process used {busiest:.0%} of a core, so throughput may be the"
            " generator's limit rather than the server's (add --processes or machines)"
        )
    if result.spec.rate > 0 and lag_p99 > SATURATED_LAG_MS:
        reasons.append(
            f"sends fell behind the schedule (p99 {lag_p99:.1f} ms); latencies still count"
            " from the scheduled times, so they include that delay"
        )
    host = result.host_cpu_busy
    warning = ""
    if host is not None and host >= BUSY_HOST:
        warning = (
            f"; note: this machine's CPUs were {host:.0%} busy, so the generator competed"
            " for cores with whatever else runs here (a server on the same host?)"
        )
    return {
        "processes": len(result.workers),
        "cpu_cores": available_cpus(),
        "host_cpu_busy": None if host is None else round(host, 3),
        "worker_cpu_utilization": [round(c, 3) for c in cpu],
        # What one request costs the generator: its capacity is about 1e6 / this per core.
        "cpu_us_per_request": (
            round(sum(w.cpu_s for w in result.workers) / result.all_requests * 1e6, 1)
            if result.all_requests
            else 0.0
        ),
        "schedule_lag_ms": {
            "p99": lag_p99,
            "max": float(lags_ms.max()) if lags_ms.size else 0.0,
        },
        "saturated": bool(reasons),
        "note": ("generator saturated: " + "; ".join(reasons) if reasons else "generator kept up")
        + warning,
    }


def summarize(result: RunResult, *, model: str = "", version: str = "") -> dict[str, Any]:
    spec, samples = result.spec, result.samples
    ok = samples.codes == 0
    codes, counts = np.unique(samples.codes[~ok], return_counts=True)
    errors = {status_name(int(c)): int(n) for c, n in zip(codes, counts, strict=True)}
    total = len(samples)
    report: dict[str, Any] = {
        "url": spec.url,
        "model": model,
        "model_version": version,
        "mode": "open" if spec.rate > 0 else "closed",
        "streaming": spec.streaming,
        "concurrency": spec.concurrency,
        "rate": spec.rate,
        "warmup_s": spec.warmup_s,
        "duration_s": result.measured_s,
        "requests": {"total": total, "ok": int(ok.sum()), "errors": total - int(ok.sum())},
        "errors_by_status": errors,
        "error_rate": (total - int(ok.sum())) / total if total else 0.0,
        "throughput_rps": int(ok.sum()) / result.measured_s if result.measured_s else 0.0,
        "offered_rps": total / result.measured_s if result.measured_s else 0.0,
        "latency_ms": latency_summary(samples.latencies_ns[ok]),
        "error_latency_ms": latency_summary(samples.latencies_ns[~ok]),
        "generator": generator_health(result),
    }
    return report


def verdict(report: dict[str, Any], max_error_rate: float) -> tuple[bool, str]:
    """Pass/fail for an exit code: nothing answered, or too many errors, fails."""
    requests = report["requests"]
    if requests["ok"] == 0:
        return False, "no request succeeded"
    if report["error_rate"] > max_error_rate:
        return False, f"error rate {report['error_rate']:.2%} above {max_error_rate:.2%}"
    return True, "ok"
