"""The gRPC side of talking to replicas: one channel each, bytes in and out.

ModelInfer goes through a multicallable with no serializers, so the router
sends the bytes it received and hands back the bytes the replica answered;
a streamed request shares one ModelStreamInfer call per replica with the
others when its model answers once (`stream_relay`), else gets a call of its
own; either way its answers are relayed as they come.
The other calls (index, metadata, config, statistics) use the typed stub.
Backend errors become domain errors carrying the backend's own message, so
the caller sees the code and text the replica chose.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from modelport import errors
from modelport.common import generative_load, tracing
from modelport.common.generative_load import LoadSink
from modelport.common.tls import ChannelMaker, ClientTlsFiles
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.router import wire
from modelport.router.forwarding import BackendUnavailable
from modelport.router.replicas import Replica
from modelport.router.stream_mux import (
    STREAM_METHOD,
    InBandError,
    NotStreaming,
    StreamClosed,
    StreamMux,
)
from modelport.router.stream_relay import StreamRelay

log = logging.getLogger(__name__)

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
# Caller metadata the backend call carries along (W3C trace context), set by
# the servicer per request; tasks started for shadows and fan-outs inherit it.
forwarded_metadata: contextvars.ContextVar[tuple[tuple[str, str], ...] | None] = (
    contextvars.ContextVar("forwarded_metadata", default=None)
)
FORWARDED_KEYS = frozenset({"traceparent", "tracestate", "baggage"})


class RelayedError(errors.ModelportError):
    """A replica's own error, passed on with its status code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BackendHandle:
    channel: grpc.aio.Channel
    infer: Any  # UnaryUnaryMultiCallable taking and returning bytes
    stub: pb_grpc.GRPCInferenceServiceStub
    mux: StreamMux | None = None
    stream: Any = None  # StreamStreamMultiCallable for ModelStreamInfer, bytes both ways
    relay: StreamRelay | None = None  # streamed requests on one shared call


def domain_error(exc: grpc.aio.AioRpcError, replica: Replica) -> errors.ModelportError:
    code = exc.code()
    details = exc.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        return BackendUnavailable(f"replica {replica.address}: {details}")
    if code == grpc.StatusCode.CANCELLED:
        # The caller cancelling shows here as asyncio.CancelledError, never as a status:
        # a CANCELLED status is the replica's server ending the call (a drain's grace
        # running out as the request arrived), so it is retried elsewhere like UNAVAILABLE.
        return BackendUnavailable(f"replica {replica.address} cancelled the call: {details}")
    return RelayedError(code.name, details)


class GrpcTransport:
    def __init__(
        self,
        max_message_bytes: int = 64 * 1024 * 1024,
        multiplex: bool = False,
        tls: ClientTlsFiles | None = None,
        relay_streams: bool = True,
    ) -> None:
        # Forward over one ModelStreamInfer stream per replica (see stream_mux).
        self.multiplex = multiplex
        # Streamed requests share one ModelStreamInfer call per replica (see stream_relay).
        self.relay_streams = relay_streams
        # Told the generative load replicas report in their streams' metadata.
        self.loads: LoadSink | None = None
        self.options: list[tuple[str, object]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # The router retries itself, on another replica.
            ("grpc.enable_retries", 0),
            # A replica restarted at the same address is reconnected soon.
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 5000),
            ("grpc.keepalive_time_ms", 30_000),
        ]

        # TLS (mutual with a client certificate) to replicas when configured.
        self.channels = ChannelMaker(tls, self.options)
        # After a certificate rotation, how long the old channels stay for their calls.
        self.redial_grace = 30.0
        self._signature = self.channels.signature()

    def open(self, replica: Replica) -> None:
        channel, _ = self.channels.dial(replica.address)
        # No serializers: the request is bytes already, the answer stays bytes.
        infer: Any = channel.unary_unary(INFER_METHOD)
        mux = StreamMux(channel, replica.address) if self.multiplex else None
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stream: Any = channel.stream_stream(STREAM_METHOD)
        relay = StreamRelay(channel, replica.address) if self.relay_streams else None
        replica.handle = BackendHandle(channel, infer, stub, mux, stream, relay)

    def rotated(self) -> bool:
        """The client certificate files changed since the channels were dialled."""
        if not self.channels.changed(self._signature):
            return False
        self._signature = self.channels.signature()
        return True

    async def redial(self, replica: Replica, grace: float | None = None) -> None:
        """New requests on a new channel; the old one closes after `grace`, time for
        the calls it carries to finish (rotation never fails a request in flight)."""
        old: BackendHandle | None = replica.handle
        self.open(replica)
        if old is not None:
            await asyncio.sleep(self.redial_grace if grace is None else grace)
            if old.mux is not None:
                await old.mux.close()
            if old.relay is not None:
                await old.relay.close()
            await old.channel.close()

    async def close(self, replica: Replica, grace: float = 30.0) -> None:
        """Close once the requests in flight on it are done (or `grace` passed)."""
        handle: BackendHandle | None = replica.handle
        if handle is None:
            return
        loop = asyncio.get_running_loop()
        until = loop.time() + grace
        while replica.in_flight > 0 and loop.time() < until:
            await asyncio.sleep(0.05)
        if handle.mux is not None:
            await handle.mux.close()
        if handle.relay is not None:
            await handle.relay.close()
        await handle.channel.close()

    async def infer(self, replica: Replica, request: bytes, timeout: float | None) -> bytes:
        handle: BackendHandle = replica.handle
        metadata = forwarded_metadata.get()
        if tracing.enabled():  # the router's forward span becomes the replica's parent
            carried = [(k, v) for k, v in metadata or () if k not in ("traceparent", "tracestate")]
            metadata = tuple(tracing.inject_metadata(carried)) or None
        mux = handle.mux
        stream_failed = False
        if mux is not None and metadata is None and not mux.unsupported:
            try:
                return await mux.infer(request, timeout, wire.routing_fields(request)[2])
            except (StreamClosed, NotStreaming):
                stream_failed = True  # re-sent unary below: fails fast if the replica is gone
            except InBandError:
                pass  # asked again unary below, so the caller gets the real status code
        try:
            answer: bytes = await handle.infer(request, timeout=timeout, metadata=metadata)
            if stream_failed and mux is not None and not mux.answered:
                log.info("replica %s does not stream; calling it unary", replica.address)
                mux.unsupported = True
            return answer
        except grpc.aio.AioRpcError as exc:
            raise domain_error(exc, replica) from None

    async def stream_infer(
        self, replica: Replica, request: bytes, timeout: float | None
    ) -> AsyncIterator[bytes]:
        """Every answer to one streamed request (several for a decoupled model).

        On the replica's shared call (`StreamRelay`) when this model was seen
        to answer once, flagged `triton_final_response`, and the request is
        small and has no trace metadata to carry; else on a call of its own,
        which also shows how the model answers. A shared call that
        breaks before answering is replaced by a call of its own, which fails
        fast (UNAVAILABLE, retried elsewhere) when the replica is gone.
        """
        handle: BackendHandle = replica.handle
        metadata = forwarded_metadata.get()
        relay = handle.relay
        model = wire.routing_fields(request)[:2]
        if relay is not None and metadata is None and relay.takes(model, request):
            relayed = [False]
            try:
                async for message in relay.answers(request, timeout, relayed):
                    yield message
                return
            except StreamClosed as exc:
                if relayed[0]:
                    raise BackendUnavailable(str(exc)) from None
            except ValueError:  # parameters the relay cannot read: a call of its own
                if relayed[0]:
                    raise
        async for message in self._own_call(handle, replica, request, timeout, metadata, model):
            yield message

    async def _own_call(
        self,
        handle: BackendHandle,
        replica: Replica,
        request: bytes,
        timeout: float | None,
        metadata: Any,
        model: tuple[str, str],
    ) -> AsyncIterator[bytes]:
        """One ModelStreamInfer call for this request, closed for writing after it,
        so the replica ends the call when the request is fully answered."""
        call = handle.stream(timeout=timeout, metadata=metadata)
        loads = self.loads
        answers: list[bytes] = []  # up to two, to learn how the model answers
        reports_load = False  # a generative replica: its loads come per call
        try:
            await call.write(request)
            await call.done_writing()
            first = True
            while (message := await call.read()) is not grpc.aio.EOF:
                if first and loads is not None:  # a generative replica's load, if it tells
                    first = False
                    reports_load = self._report(loads, replica, await call.initial_metadata())
                if len(answers) < 2:
                    answers.append(message)
                yield message
            if loads is not None:
                self._report(loads, replica, await call.trailing_metadata())
            if handle.relay is not None:
                handle.relay.learn(model, answers, reports_load)
        except grpc.aio.AioRpcError as exc:
            raise domain_error(exc, replica) from None
        finally:
            call.cancel()  # no-op once the call ended; stops it if the caller left

    @staticmethod
    def _report(sink: LoadSink, replica: Replica, metadata: Any) -> bool:
        reported = generative_load.from_metadata(metadata)
        if reported:
            sink.report(replica.address, reported)
        return bool(reported)

    async def call(self, replica: Replica, method: str, request: Any, timeout: float = 10.0) -> Any:
        """A typed unary call on the replica's stub, errors as domain errors."""
        try:
            return await getattr(replica.handle.stub, method)(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise domain_error(exc, replica) from None

    async def served_versions(self, replica: Replica) -> dict[str, frozenset[str]]:
        """model -> READY versions, from the replica's RepositoryIndex."""
        index = await self.call(
            replica, "RepositoryIndex", pb.RepositoryIndexRequest(ready=True), 5.0
        )
        served: dict[str, set[str]] = {}
        for entry in index.models:
            if entry.state in ("", "READY"):
                versions = served.setdefault(entry.name, set())
                if entry.version:
                    versions.add(entry.version)
        return {name: frozenset(versions) for name, versions in served.items()}
