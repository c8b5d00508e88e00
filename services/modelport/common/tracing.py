"""Tracing across router → inference → registry, with the W3C trace context in gRPC metadata.

One TracerProvider per process, set up by `configure`: spans go to an OTLP/gRPC
collector when `--otlp-endpoint` is set, to an injected exporter in tests, and
nowhere otherwise, in which case every helper here is a no-op costing about a
function call (no span objects, no context switches).

Propagation is done by hand with the W3C propagator rather than
opentelemetry-instrumentation-grpc's aio server interceptor: the interceptor
wraps every handler and proxies every servicer context, which cost 11-13% of a
trivial handler's throughput here whether tracing was on or off, while these
helpers were within the noise (±3%) of no tracing code at all
(benchmarks/bench_tracing_overhead.py, 2 cores, 2026-11-23). A span that is
recorded costs tens of µs of CPU: sample in production with the standard
OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG variables (read by the SDK).

    tracing.configure("inference", otlp_endpoint)            # once, at start-up
    with tracing.server_span("ModelInfer", grpc_context):    # in a servicer method
        with tracing.span(tracing.INFERENCE_QUEUE, model=name):
            ...
    await stub.ModelInfer(request, metadata=tracing.inject_metadata())  # router → replica

A batcher keeps `tracing.capture()` with each queued request, then calls
`tracing.record_span(INFERENCE_QUEUE, parent=ctx, start_ns=…, end_ns=…)` when the
batch is taken and opens `span(INFERENCE_EXECUTE, parent=first_ctx, links=…,
batch_size=n)` around the execution.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

# The spans the services open (names shared with dashboards and tests).
ROUTER_PICK = "router.pick"
ROUTER_FORWARD = "router.forward"
INFERENCE_QUEUE = "inference.queue"
INFERENCE_EXECUTE = "inference.execute"
REGISTRY_DOWNLOAD = "registry.download"

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = ("traceparent", "tracestate")
_NOOP = contextlib.nullcontext()  # reentrant and reusable: the off-path allocates nothing

_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


def configure(
    service_name: str,
    otlp_endpoint: str = "",
    *,
    exporter: SpanExporter | None = None,
) -> bool:
    """Set up this process's tracing; returns whether spans are recorded at all.

    `exporter` (tests) gets each span synchronously as it ends; an OTLP
    endpoint gets batches in the background. With neither, tracing stays off.
    Calling again replaces the previous set-up (its spans are flushed first).
    """
    global _provider, _tracer
    shutdown()
    if exporter is None and not otlp_endpoint:
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = not otlp_endpoint.startswith("https://")
        otlp = OTLPSpanExporter(endpoint=otlp_endpoint, insecure=insecure)
        provider.add_span_processor(BatchSpanProcessor(otlp))
        log.info("traces to OTLP collector %s", otlp_endpoint)
    _provider = provider
    _tracer = provider.get_tracer("modelport")
    # Libraries that ask the global API (and logs' trace ids) see the same provider;
    # the API allows setting it once per process, so later calls keep the first.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)
    return True


def shutdown() -> None:
    """Flush and stop span export (at drain, before the process exits)."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider = None
    _tracer = None


def enabled() -> bool:
    return _tracer is not None


def span(
    name: str,
    *,
    parent: otel_context.Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    links: Sequence[Link] = (),
    **attributes: Any,
) -> contextlib.AbstractContextManager[Any]:
    """A span that is current inside the `with` block (a no-op when tracing is off).

    `parent` defaults to the current span; `links` tie a batch span to the
    requests it carries. Attributes are keyword arguments: `batch_size=8`.
    """
    if _tracer is None:
        return _NOOP
    return _tracer.start_as_current_span(
        name, context=parent, kind=kind, links=links, attributes=attributes or None
    )


def extract_context(source: Any) -> otel_context.Context | None:
    """The caller's trace context from a grpc (aio) servicer context or a metadata sequence.

    None when tracing is off or the caller sent no `traceparent`.
    """
    if _tracer is None:
        return None
    metadata = source.invocation_metadata() if hasattr(source, "invocation_metadata") else source
    carrier = {key: value for key, value in metadata or () if key in _TRACE_HEADERS}
    if "traceparent" not in carrier:
        return None
    return _PROPAGATOR.extract(carrier)


def server_span(method: str, grpc_context: Any, **attributes: Any) -> Any:
    """The SERVER span of an incoming call, child of the caller's span when it sent one."""
    if _tracer is None:
        return _NOOP
    return span(
        method,
        parent=extract_context(grpc_context),
        kind=SpanKind.SERVER,
        **{"rpc.system": "grpc", "rpc.method": method, **attributes},
    )


def inject_metadata(
    metadata: Sequence[tuple[str, str]] = (),
) -> Sequence[tuple[str, str]]:
    """Outgoing call metadata with the current span's `traceparent` added (router → replica)."""
    if _tracer is None:
        return metadata
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    if not carrier:
        return metadata
    return (*metadata, *carrier.items())


def capture() -> otel_context.Context | None:
    """The current trace context, to hand to work done later elsewhere (a batcher's queue)."""
    return otel_context.get_current() if _tracer is not None else None


def record_span(
    name: str,
    *,
    parent: otel_context.Context | None,
    start_ns: int,
    end_ns: int,
    **attributes: Any,
) -> None:
    """A span that already happened: start/end are `time.time_ns()` values.

    For waits measured elsewhere, e.g. `inference.queue` from a request's
    enqueue time to the moment its batch was taken, under the request's context.
    """
    if _tracer is None:
        return
    recorded = _tracer.start_span(
        name, context=parent, start_time=start_ns, attributes=attributes or None
    )
    recorded.end(end_time=end_ns)


def current_link() -> Link | None:
    """A link to the current span, for a later span that serves many requests (a batch)."""
    if _tracer is None:
        return None
    span_context = trace.get_current_span().get_span_context()
    return Link(span_context) if span_context.is_valid else None
