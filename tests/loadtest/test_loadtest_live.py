"""`modelport loadtest` against the real inference service (sample models), short and bounded.

The server runs in the test's event loop; the load session runs in a thread
(its worker processes connect over loopback), so the loop keeps serving.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modelport.client import AsyncInferenceClient
from modelport.common import metrics
from modelport.loadtest.session import SessionOptions, run_session

from tests.loadtest.checks import check_consistent

pytestmark = pytest.mark.timeout(120)


async def run(address: str, model: str, **options: Any) -> tuple[dict, bool]:
    settings: dict[str, Any] = {"duration_s": 1.0, "warmup_s": 0.3, "processes": 2, "live": False}
    settings.update(options)
    return await asyncio.to_thread(
        run_session, SessionOptions(url=address, model=model, **settings)
    )


async def test_report_matches_what_the_service_counted(
    inference_server: Any, sample_repo: Path, tmp_path: Path
) -> None:
    app = await inference_server(sample_repo)
    metrics_port = metrics.serve_metrics("127.0.0.1", 0)
    async with AsyncInferenceClient(app.address) as client:
        before = (await client.model_statistics("mlp")).model_stats[0].inference_count
        report, passed = await run(
            app.address,
            "mlp",
            random=True,
            shapes={"INPUT": [4, 256]},
            concurrency=4,
            server_metrics=[f"127.0.0.1:{metrics_port}"],
            plot_path=tmp_path / "mlp.png",
        )
        after = (await client.model_statistics("mlp")).model_stats[0].inference_count
    assert passed, report["failures"]
    check_consistent(report)
    assert report["requests"]["errors"] == 0 and report["requests"]["ok"] > 10
    # Triton counts rows: 4 per request; warm-up requests are counted by the server too.
    assert after - before >= 4 * report["requests"]["total"]
    server = report["server"]
    assert server["requests_by_code"]["OK"] >= report["requests"]["ok"]
    # Time in the server is part of what the client saw, and queue + compute fit inside it.
    assert 0 < server["request_ms"] <= report["latency_ms"]["max"]
    assert server["queue_ms"] + server["compute_ms"] <= server["request_ms"] * 1.05
    assert server["batch_size_mean"] >= 1
    assert (tmp_path / "mlp.png").exists()


async def test_wrong_model_and_bad_inputs_are_counted_by_status(
    inference_server: Any, sample_repo: Path, tmp_path: Path
) -> None:
    app = await inference_server(sample_repo)
    np.save(tmp_path / "in0.npy", np.ones((1, 16), np.int32))
    np.save(tmp_path / "short.npy", np.ones((1, 3), np.int32))
    npy = {"INPUT0": tmp_path / "in0.npy"}
    missing, missing_passed = await run(
        app.address, "no-such-model", npy_files=npy, concurrency=2, duration_s=0.5
    )
    invalid, invalid_passed = await run(
        app.address,
        "simple",
        npy_files={**npy, "INPUT1": tmp_path / "short.npy"},
        concurrency=2,
        duration_s=0.5,
    )
    for report in (missing, invalid):
        check_consistent(report)
        assert report["requests"]["ok"] == 0 and report["requests"]["errors"] > 0
    assert set(missing["errors_by_status"]) == {"NOT_FOUND"}
    assert set(invalid["errors_by_status"]) == {"INVALID_ARGUMENT"}
    assert not missing_passed and not invalid_passed


async def test_streaming_against_the_service(inference_server: Any, sample_repo: Path) -> None:
    app = await inference_server(sample_repo)
    report, passed = await run(
        app.address, "simple", random=True, streaming=True, concurrency=2, duration_s=0.6
    )
    assert passed
    check_consistent(report)
    assert report["requests"]["ok"] > 10
