"""One request, one trace: caller → the real router → an OIP backend, with parent links.

Spans go to an in-memory exporter. The backend is the toy OIP server (it
opens the inference service's spans); tests/router/test_router_tracing.py
runs the same path with the real inference service behind the router.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from modelport.client import AsyncInferenceClient
from modelport.common import logs, tracing
from modelport.router.app import RouterApp
from modelport.router.discovery import StaticDiscovery
from modelport.router.replicas import Endpoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.router.router_helpers import wait_until
from tests.support.toy_oip_server import serve_toy


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure("test", exporter=exporter)
    yield exporter
    tracing.shutdown()


@pytest.fixture
async def backend() -> AsyncIterator[str]:
    async with serve_toy() as (address, _):
        yield address


def by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        named.setdefault(span.name, []).append(span)
    return named


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_request_is_one_linked_trace(
    spans: InMemorySpanExporter, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    a = np.ones((1, 16), dtype=np.int32)
    router = RouterApp(StaticDiscovery([Endpoint("simple", backend)]), index_interval=0.2)
    port = await router.start()
    try:
        await wait_until(lambda: bool(router.table.candidates("simple", "")), 30)
        async with AsyncInferenceClient(f"127.0.0.1:{port}", timeout=10) as client:
            with tracing.span("caller", kind=SpanKind.CLIENT) as root:
                out = await client.infer(
                    "simple", {"INPUT0": a, "INPUT1": a}, metadata=tracing.inject_metadata()
                )
    finally:
        await router.stop(0)
    np.testing.assert_array_equal(out["OUTPUT0"], 2 * a)
    finished = spans.get_finished_spans()
    assert len({span.context.trace_id for span in finished}) == 1
    assert {span.context.trace_id for span in finished} == {root.get_span_context().trace_id}
    named = by_name(finished)
    router_server, backend_server = sorted(
        named["ModelInfer"], key=lambda s: s.start_time or 0
    )  # the router's call starts first and encloses the backend's
    caller = named["caller"][0]
    pick = named[tracing.ROUTER_PICK][0]
    forward = named[tracing.ROUTER_FORWARD][0]
    queue = named[tracing.INFERENCE_QUEUE][0]
    execute = named[tracing.INFERENCE_EXECUTE][0]
    assert caller.parent is None
    assert parent_of(router_server) == caller.context.span_id
    assert router_server.kind == backend_server.kind == SpanKind.SERVER
    assert parent_of(pick) == router_server.context.span_id
    assert parent_of(forward) == router_server.context.span_id
    # Crossing the process boundary: the backend's server span is the forwarded call's child.
    assert parent_of(backend_server) == forward.context.span_id
    assert backend_server.parent is not None and backend_server.parent.is_remote
    assert parent_of(queue) == parent_of(execute) == backend_server.context.span_id
    assert execute.attributes is not None and execute.attributes["batch_size"] == 1
    assert pick.attributes is not None and pick.attributes["model"] == "simple"

    # Logs written inside a span carry its trace id (common/logs.py reads the current span).
    logs.configure("info")
    handler = logging.getLogger().handlers[0]
    with tracing.span("logged"):
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "inside", None, None)
        handler.filter(record)
    assert record.trace_id == f"{spans.get_finished_spans()[-1].context.trace_id:032x}"


async def test_without_configuration_nothing_is_recorded_or_sent(backend: str) -> None:
    tracing.shutdown()
    assert not tracing.enabled()
    with tracing.span(tracing.INFERENCE_QUEUE, model="m") as span:
        assert span is None
    assert tracing.inject_metadata((("k", "v"),)) == (("k", "v"),)
    assert (
        tracing.extract_context([("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01")])
        is None
    )
    assert tracing.current_link() is None
    async with AsyncInferenceClient(backend) as client:
        assert await client.is_server_live()


def test_extract_ignores_callers_without_traceparent(spans: InMemorySpanExporter) -> None:
    assert tracing.extract_context([("user-agent", "grpc-python")]) is None
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    context = tracing.extract_context([("traceparent", f"00-{trace_id}-{span_id}-01")])
    with tracing.span("child", parent=context):
        link = tracing.current_link()
    child = spans.get_finished_spans()[-1]
    assert f"{child.context.trace_id:032x}" == trace_id
    assert parent_of(child) == int(span_id, 16)
    assert link is not None and link.context.span_id == child.context.span_id


def test_recorded_spans_keep_their_times_and_parent(spans: InMemorySpanExporter) -> None:
    """A batcher's view: capture each request's context, record its queue wait later."""
    with tracing.span("request") as request_span:
        captured = tracing.capture()
    start = time.time_ns()
    tracing.record_span(
        tracing.INFERENCE_QUEUE,
        parent=captured,
        start_ns=start,
        end_ns=start + 2_000_000,
        model="m",
    )
    queue = spans.get_finished_spans()[-1]
    assert parent_of(queue) == request_span.get_span_context().span_id
    assert queue.end_time - queue.start_time == 2_000_000
    assert queue.attributes == {"model": "m"}
    tracing.shutdown()
    assert tracing.capture() is None
    tracing.record_span("ignored", parent=None, start_ns=0, end_ns=1)  # no-op when off
