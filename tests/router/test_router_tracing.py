"""One request through the real router into a real inference service is one linked trace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from modelport.common import tracing
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.router.app import RouterApp
from modelport.router.discovery import StaticDiscovery
from modelport.router.replicas import Endpoint
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.inference.requests import simple_request
from tests.router.router_helpers import wait_until


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure("test", exporter=exporter)
    yield exporter
    tracing.shutdown()


@pytest.mark.parametrize("multiplex", [False, True])
async def test_router_spans_link_caller_and_replica(
    spans: InMemorySpanExporter, inference_server: Any, sample_repo: Path, multiplex: bool
) -> None:
    backend = await inference_server(sample_repo)
    app = RouterApp(StaticDiscovery([Endpoint("simple", backend.address)]), multiplex=multiplex)
    await app.start()
    try:
        await wait_until(lambda: bool(app.table.candidates("simple", "")), 30)
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with tracing.span("caller", kind=SpanKind.CLIENT) as caller:
                await stub.ModelInfer(
                    simple_request(a, a), metadata=tracing.inject_metadata(), timeout=10
                )
    finally:
        await app.stop(0)
    finished = spans.get_finished_spans()
    assert len({s.context.trace_id for s in finished}) == 1
    by_name = {s.name: s for s in finished if s.name != "ModelInfer"}
    servers = [s for s in finished if s.kind == SpanKind.SERVER]
    (router_span,) = [s for s in servers if s.parent.span_id == caller.get_span_context().span_id]
    pick, forward = by_name[tracing.ROUTER_PICK], by_name[tracing.ROUTER_FORWARD]
    assert pick.parent.span_id == router_span.context.span_id
    assert pick.attributes["replica"] == backend.address
    assert forward.parent.span_id == router_span.context.span_id
    # The replica's SERVER span is a remote child of the router's forward span
    # (with tracing on, the router forwards unary even when multiplexing).
    (replica_span,) = [s for s in servers if s.parent.span_id == forward.context.span_id]
    assert replica_span.parent.is_remote
    # Inside the inference service: waiting for a batch, then the batch's execution.
    queue, execute = by_name[tracing.INFERENCE_QUEUE], by_name[tracing.INFERENCE_EXECUTE]
    assert queue.parent.span_id == replica_span.context.span_id
    assert execute.attributes["batch_size"] >= 1
