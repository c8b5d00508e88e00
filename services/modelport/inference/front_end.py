"""The inference server's transport outside Python (`--fast-path on|auto`).

On two cores, Python's gRPC transport (HTTP/2, grpc's Cython core, the per-call
tasks) costs about what a bare Python server spends on its whole answer, and
that alone kept a small model below 0.6 of a bare server's throughput however
lean the rest was (benchmarks/README.md, "What stops the MLP"). So
`modelport-fastpath -local` (services/fastpath/local.go, Go) listens on the
public port and hands each ModelInfer call's bytes over a Unix socket to this
process, which answers it with the same `DataPlane.infer` the gRPC servicer
calls: parsing, validation, shared memory, batching, the model, statistics and
the answer's bytes stay here. Every other call (streams, metadata, health,
reflection, repository and shared-memory control) is relayed by the Go process
to this server's gRPC port, private on loopback behind it.

The frames are described in local.go. A call is one task here, as it would be
under grpc.aio; a cancel frame (the caller went away) cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from modelport.common import grpc_errors, tracing
from modelport.common.fastpath_process import BINARY, Choice, host_port, spawn, terminate
from modelport.common.fastpath_process import choose as choose_binary
from modelport.inference.settings import InferenceSettings
from modelport.proto.inference import grpc_service_pb2 as pb

log = logging.getLogger(__name__)

METHOD = "/inference.GRPCInferenceService/ModelInfer"
_CALL, _CANCEL = 0, 1
_LENGTH = struct.Struct("<I")
_KIND_ID = struct.Struct("<BQ")  # a frame's kind and its call's id
_TIMEOUT = struct.Struct("<Q")  # after them in a call: its timeout in µs (0: none)
_ANSWER_HEAD = struct.Struct("<IQI")  # length of what follows, id, status code
_parse = cast(
    Callable[[bytes], pb.ModelInferRequest],
    grpc_errors.parser(METHOD, pb.ModelInferRequest.FromString),
)

Answer = Callable[[pb.ModelInferRequest, float | None], Awaitable[pb.ModelInferResponse]]


def ineligible(settings: InferenceSettings) -> str:
    """Why this configuration needs every call in Python's gRPC server ("" if none)."""
    if settings.tls is not None:
        return "TLS is on (the front serves plaintext only)"
    if settings.auth is not None or settings.allowed_peers:
        return "access control is configured (identities and policies are Python's)"
    if settings.otlp_endpoint or tracing.enabled():
        return "tracing is on (the server's spans are recorded in Python)"
    if settings.workers > 1 or settings.reuse_port or settings.private_port:
        return "several workers share the port (each would need a front of its own)"
    return ""


def choose(settings: InferenceSettings) -> Choice:
    """The binary when the fast path is to run, else None (common/fastpath_process.py)."""
    return choose_binary(settings.fast_path, settings.fast_path_binary, ineligible(settings))


@dataclass
class CallCounts:
    cancelled: int = 0  # calls whose caller went away while they ran here


class LocalCalls(asyncio.Protocol):
    """One connection from the Go front: call frames in, answer frames out."""

    def __init__(self, answer: Answer, counts: CallCounts) -> None:
        self._answer = answer
        self._counts = counts
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._calls: dict[int, asyncio.Task[None]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start, size = 0, len(buffer)
        with memoryview(buffer) as view:  # released before the buffer shrinks
            while size - start >= 4:
                (length,) = _LENGTH.unpack_from(view, start)
                if size - start - 4 < length:
                    break
                head = start + 4
                start = head + length
                kind, call = _KIND_ID.unpack_from(view, head)
                if kind == _CALL:
                    (timeout_us,) = _TIMEOUT.unpack_from(view, head + _KIND_ID.size)
                    body = bytes(view[head + _KIND_ID.size + _TIMEOUT.size : start])
                    remaining = timeout_us / 1e6 if timeout_us else None
                    self._calls[call] = asyncio.get_running_loop().create_task(
                        self._run(call, body, remaining)
                    )
                elif kind == _CANCEL:
                    running = self._calls.pop(call, None)
                    if running is not None:
                        running.cancel()
                        self._counts.cancelled += 1
        if start:
            del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self._calls.values():
            task.cancel()
        self._calls.clear()

    async def _run(self, call: int, body: bytes, remaining: float | None) -> None:
        try:
            response = await self._answer(_parse(body), remaining)
            payload, code = response.SerializeToString(), 0
        except asyncio.CancelledError:
            self._calls.pop(call, None)
            return  # nobody is waiting for it any more
        except Exception as exc:  # the same boundary as every gRPC call (grpc_errors)
            status, message = grpc_errors.outcome(METHOD, exc)
            payload, code = message.encode(), status.value[0]
        self._calls.pop(call, None)
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(_ANSWER_HEAD.pack(12 + len(payload), call, code) + payload)


class FrontEnd:
    """The Unix socket this process answers on and the Go process in front of it.

    Should the Go process die, it is started again on the same port."""

    def __init__(
        self, binary: Path, answer: Answer, *, max_message_bytes: int, grace_seconds: float
    ) -> None:
        self.binary = binary
        self.answer = answer
        self.max_message_bytes = max_message_bytes
        self.grace_seconds = grace_seconds
        self.port = 0
        self.counts = CallCounts()
        # Abstract (Linux): nothing on the filesystem to clean up or to make writable.
        self.socket_name = f"\0modelport-inference-{os.getpid()}-{os.urandom(6).hex()}"
        self._server: asyncio.AbstractServer | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._exited: asyncio.Future[int] | None = None
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, fallback: str) -> int:
        """Answer on the socket, put the front on `host:port` relaying the rest to
        `fallback`; returns the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: LocalCalls(self.answer, self.counts), self.socket_name
        )
        self._host, self._fallback = host, fallback
        await self._spawn(port)
        self._supervisor = loop.create_task(self._supervise())
        return self.port

    async def _spawn(self, port: int) -> None:
        where = host_port(self._host, port)
        command = [
            str(self.binary), "-listen", where, "-fallback", self._fallback,
            "-local", "@" + self.socket_name[1:],  # Go's spelling of an abstract name
            "-max-message-bytes", str(self.max_message_bytes),
            "-grace", f"{self.grace_seconds}s",
        ]  # fmt: skip
        self._process, self._exited, self.port = await spawn(command, where)
        log.info("gRPC listening on %s:%d (plaintext, fast path: %s in front, the rest "
                 "relayed to %s)", self._host, self.port, BINARY, self._fallback)  # fmt: skip

    async def _supervise(self) -> None:
        while True:
            assert self._exited is not None
            code = await asyncio.shield(self._exited)
            if self._stopping:
                return
            log.error("%s exited (code %s); starting it again on port %d", BINARY, code, self.port)
            await asyncio.sleep(0.2)
            try:
                await self._spawn(self.port)
            except OSError as exc:
                log.error("%s", exc)
                await asyncio.sleep(1.0)

    async def stop(self, grace: float) -> None:
        """The front stops accepting and lets calls in flight finish within `grace`
        (they are answered here meanwhile); then the socket closes."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._process is not None and self._exited is not None:
            await terminate(self._process, self._exited, grace)
        if self._server is not None:
            self._server.close()
