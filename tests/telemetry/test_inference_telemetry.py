"""The real inference service's telemetry: its /metrics counts a request; its spans join a trace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from modelport.client import AsyncInferenceClient, ModelportClientError
from modelport.common import metrics, tracing
from modelport.common.scrape import scrape
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support.router_hop import serve_router_hop

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


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure("test", exporter=exporter)
    yield exporter
    tracing.shutdown()


async def test_trace_crosses_router_hop_into_the_inference_service(
    spans: InMemorySpanExporter, inference_server: Any, sample_repo: Path
) -> None:
    """Same shape as test_tracing's toy-backend test, with the real service as the backend."""
    app = await inference_server(sample_repo)
    async with serve_router_hop([app.address]) as router, AsyncInferenceClient(router) as client:
        with tracing.span("caller", kind=SpanKind.CLIENT):
            await client.infer(
                "simple", {"INPUT0": A, "INPUT1": A}, metadata=tracing.inject_metadata()
            )
    finished = spans.get_finished_spans()
    assert len({span.context.trace_id for span in finished}) == 1
    forward = next(s for s in finished if s.name == tracing.ROUTER_FORWARD)
    # Two SERVER spans: the router hop's (child of "caller") and the service's (child of forward).
    servers = [s for s in finished if s.kind == SpanKind.SERVER]
    assert len(servers) == 2
    (inference_span,) = [
        s for s in servers if s.parent and s.parent.span_id == forward.context.span_id
    ]
    assert inference_span.parent is not None and inference_span.parent.is_remote
    queue = next(s for s in finished if s.name == tracing.INFERENCE_QUEUE)
    execute = next(s for s in finished if s.name == tracing.INFERENCE_EXECUTE)
    assert queue.parent is not None and queue.parent.span_id == inference_span.context.span_id
    assert execute.attributes is not None and execute.attributes["batch_size"] >= 1
