"""A router-shaped hop for tracing tests: receives ModelInfer, picks, forwards to a backend.

It opens the spans modelport's router opens (server span, `router.pick`, a
client span around the forwarded call) and propagates the trace context in the
outgoing metadata with `tracing.inject_metadata()`, as the router does. Once
the real router exists, tests can serve it in this one's place.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from modelport.common import tracing
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from opentelemetry.trace import SpanKind


class RouterHop(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, backends: list[str]) -> None:
        self.channels = [grpc.aio.insecure_channel(address) for address in backends]
        self.stubs = [pb_grpc.GRPCInferenceServiceStub(channel) for channel in self.channels]
        self.picks = 0

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        with tracing.server_span("ModelInfer", context, model=request.model_name):
            with tracing.span(tracing.ROUTER_PICK, model=request.model_name) as pick:
                replica = self.picks % len(self.stubs)
                self.picks += 1
                if pick is not None:
                    pick.set_attribute("replica", replica)
            with tracing.span(tracing.ROUTER_FORWARD, kind=SpanKind.CLIENT):
                try:
                    return await self.stubs[replica].ModelInfer(
                        request, metadata=tracing.inject_metadata(), timeout=10
                    )
                except grpc.aio.AioRpcError as error:
                    await context.abort(error.code(), error.details() or "")


@contextlib.asynccontextmanager
async def serve_router_hop(backends: list[str]) -> AsyncIterator[str]:
    server = grpc.aio.server()
    hop = RouterHop(backends)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(hop, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
        for channel in hop.channels:
            await channel.close()
