"""The real inference service's telemetry: its /metrics counts a request; its spans join a trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from modelport.client import AsyncInferenceClient, ModelportClientError
from modelport.common import metrics
from modelport.common.scrape import scrape

A = np.arange(16, dtype=np.int32).reshape(1, 16)
REQUESTS = "modelport_inference_requests_total"


async def test_metrics_page_parses_and_counts_the_request(
    inference_server: Any, sample_repo: Path
) -> None:
    app = await inference_server(sample_repo)
    port = metrics.serve_metrics("127.0.0.1", 0)  # the process-wide provider the service uses
    before = scrape(f"127.0.0.1:{port}")
    async with AsyncInferenceClient(app.address) as client:
        await client.infer("simple", {"INPUT0": A, "INPUT1": A})
        with pytest.raises(ModelportClientError) as error:
            await client.infer("simple", {"INPUT0": A})  # INPUT1 missing
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    after = scrape(f"127.0.0.1:{port}")

    def delta(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    assert delta(REQUESTS, model="simple", code="OK") == 1
    assert delta(REQUESTS, model="simple", code="INVALID_ARGUMENT") == 1
    assert delta("modelport_inference_request_duration_seconds_count", model="simple") >= 1
    assert after.types["modelport_inference_request_duration_seconds"] == "histogram"
    assert {
        "modelport_inference_queue_duration_seconds_sum",
        "modelport_inference_batch_size_count",
    } <= after.names()
