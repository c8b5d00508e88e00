"""Many unary ModelInfer requests over one long-lived ModelStreamInfer call per replica.

Why: a grpc.aio unary call costs the router about as much CPU as answering
one, so a plain forwarder spends ~1.7-1.9x a bare server's CPU per request.
Writing a message on an open stream costs far less (measured in
benchmarks/bench_router.py). Each request is sent with a router-chosen `id`
(appended to the bytes: the last `id` on the wire wins) and its answer is
matched by that id, which the replica echoes, then given back the caller's id.

What the stream cannot carry is handled without it (in `GrpcTransport`): an
answer that comes back as an in-band error is re-asked as a unary call so the
caller gets the replica's real status code; requests with trace metadata go
unary (a stream message has no metadata); the requests on a stream that
breaks are re-sent as unary calls, which succeed on a live replica and fail
fast (UNAVAILABLE, so the router retries elsewhere) on a dead one; and a
replica whose streams never answer while its unary calls do is taken not to
stream, and is called unary from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

import grpc

from modelport import errors
from modelport.router import wire

log = logging.getLogger(__name__)

STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
ID_TAG = b"\x1a"  # ModelInferRequest.id / ModelInferResponse.id = 3


class InBandError(Exception):
    """The replica answered this request with an error message on the stream."""


class StreamClosed(Exception):
    """The stream broke or could not be opened; the request may be retried."""


class NotStreaming(Exception):
    """The replica does not implement ModelStreamInfer."""


class StreamMux:
    def __init__(self, channel: grpc.aio.Channel, address: str) -> None:
        self.address = address
        self._open: Any = channel.stream_stream(STREAM_METHOD)
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._pending: dict[bytes, tuple[asyncio.Future[bytes], bytes]] = {}
        self._ids = itertools.count(1)
        self.unsupported = False
        # Whether any stream to this replica ever carried an answer: a replica
        # whose streams fail before answering anything may not stream at all.
        self.answered = False

    def _ensure_call(self) -> tuple[Any, asyncio.Task[None]]:
        if self._call is None or self._reader is None:
            self._call = self._open()
            self._reader = asyncio.get_running_loop().create_task(self._read(self._call))
        return self._call, self._reader

    async def _read(self, call: Any) -> None:
        reason: Exception = StreamClosed(f"replica {self.address}: stream ended")
        try:
            async for message in call:
                error, answer = wire.stream_parts(message)
                key = wire.routing_fields(answer)[2].encode()
                entry = self._pending.pop(key, None)
                if entry is None:
                    continue  # the caller gave up (deadline) before the answer came
                future, caller_id = entry
                self.answered = True
                if future.done():
                    continue
                if error:
                    future.set_exception(InBandError(error))
                else:
                    future.set_result(answer + wire.length_delimited(ID_TAG, caller_id))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self.unsupported = True
                reason = NotStreaming(exc.details() or "")
            else:
                reason = StreamClosed(f"replica {self.address}: {exc.details() or exc.code().name}")
        except Exception as exc:  # a malformed answer: drop the stream, keep serving
            log.warning("stream to %s failed: %s", self.address, exc)
            reason = StreamClosed(f"replica {self.address}: {exc}")
        finally:
            if self._call is call:
                self._call = None
                self._reader = None
            pending, self._pending = self._pending, {}
            for future, _ in pending.values():
                if not future.done():
                    future.set_exception(reason)

    async def infer(self, request: bytes, timeout: float | None, caller_id: str) -> bytes:
        call, reader = self._ensure_call()
        key = f"mux-{next(self._ids)}".encode()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._pending[key] = (future, caller_id.encode())
        try:
            async with self._write_lock:
                await call.write(request + wire.length_delimited(ID_TAG, key))
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            self._pending.pop(key, None)
            # The call is over; its reader learns why (UNIMPLEMENTED or a break).
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), 1.0)
            if self.unsupported:
                raise NotStreaming(self.address) from None
            raise StreamClosed(f"replica {self.address}: stream write failed") from None
        timer = None
        if timeout is not None:
            timer = loop.call_later(timeout, self._expire, key)
        try:
            return await future
        finally:
            if timer is not None:
                timer.cancel()
            self._pending.pop(key, None)

    def _expire(self, key: bytes) -> None:
        entry = self._pending.pop(key, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(
                errors.DeadlineExceeded(f"replica {self.address}: deadline exceeded")
            )

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
