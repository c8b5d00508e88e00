"""Streamed requests over one long-lived ModelStreamInfer call per replica.

Why: relaying each message of a caller's stream on a ModelStreamInfer call of
its own costs the router (and the replica, which sets up a stream handler per
call) about what a whole unary call costs: a stream of small requests ran
~4x slower through the router than directly (benchmarks/bench_stream.py).
Here every request is written on one open call with a router-chosen `id`
(appended: the last `id` on the wire wins); answers are matched by that id and
given back the caller's id, so several requests and callers share the call.

A request's answers end at an in-band error or at an answer flagged
`triton_final_response`. So that a decoupled request that answers nothing
also ends, the relayed request asks for the empty final response
(`triton_enable_empty_final_response`); that empty answer is dropped unless
the caller asked for it too, so the caller sees what a call of its own shows.
Only requests for a model seen on this replica to answer once, flagged final
(`learn`), come here: generative and streaming decoupled models, and replicas
that do not flag (Triton without the option), keep a call per request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from modelport import errors
from modelport.router import wire
from modelport.router.forwarding import BackendUnavailable
from modelport.router.stream_mux import ID_TAG, STREAM_METHOD, StreamClosed

log = logging.getLogger(__name__)

FINAL = "triton_final_response"
EMPTY_FINAL = "triton_enable_empty_final_response"
ERROR_CODE = "error_code"  # the status code name an in-band error carries (inference side)
ASK_EMPTY_FINAL = wire.parameter_entry(EMPTY_FINAL, wire.BOOL_TRUE)
# Requests in flight on one shared call, at most (the replica reads a stream's
# next message only while its window, 256, has room); then another call is
# opened, up to MAX_LANES per replica; past that, requests take calls of their own.
MAX_PENDING = 192
MAX_LANES = 8
# Larger requests gain little from sharing and would hold the shared call's
# flow-control window (and, past the replica's limit, break the call).
MAX_RELAYED_BYTES = 1 << 20
_END = object()


class Pending:
    """One relayed request: its answers, as they come, for its caller."""

    __slots__ = ("caller_id", "queue", "wants_empty_final")

    def __init__(self, caller_id: bytes, wants_empty_final: bool) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.caller_id = caller_id
        self.wants_empty_final = wants_empty_final


class Lane:
    """One shared ModelStreamInfer call and the requests in flight on it."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.reader: asyncio.Task[None] | None = None
        self.write_lock = asyncio.Lock()
        self.pending: dict[bytes, Pending] = {}


class StreamRelay:
    def __init__(self, channel: grpc.aio.Channel, address: str) -> None:
        self.address = address
        self._open: Any = channel.stream_stream(STREAM_METHOD)
        self._lanes: list[Lane] = []
        self._ids = itertools.count(1)
        # (model, version) -> whether it answers a request once, flagged final.
        self.flagged: dict[tuple[str, str], bool] = {}
        self.carried = 0  # requests written on the shared calls (read by tests)

    def takes(self, model: tuple[str, str], request: bytes) -> bool:
        """Whether `request` (for `model`: name, version) goes on a shared call."""
        return (
            self.flagged.get(model, False)
            and len(request) <= MAX_RELAYED_BYTES
            and (len(self._lanes) < MAX_LANES or self._roomy() is not None)
        )

    def learn(self, model: tuple[str, str], answers: list[bytes], reports_load: bool) -> None:
        """From the answers to a request on a call of its own: only a model seen
        to answer once, flagged final and without an error, is relayed (a
        decoupled one that streams keeps calls of its own, which stop when
        their caller leaves; a replica that reports generative load in each
        call's metadata keeps a call per request, for the balancer)."""
        if model in self.flagged or len(answers) == 0:
            return
        if len(answers) > 1 or reports_load:
            self.flagged[model] = False
            return
        try:
            error, answer = wire.stream_parts_raw(answers[0])
            final = wire.bool_param(wire.parameters(answer, FINAL)[1].get(FINAL))
        except (ValueError, IndexError):
            self.flagged[model] = False
            return
        if not error:
            self.flagged[model] = final is True

    def _roomy(self) -> Lane | None:
        for lane in self._lanes:
            if len(lane.pending) < MAX_PENDING:
                return lane
        return None

    def _lane(self) -> Lane:
        """A call with room; a new one when every call is full (see MAX_LANES)."""
        lane = self._roomy()
        if lane is None:
            lane = Lane(self._open())
            lane.reader = asyncio.get_running_loop().create_task(self._read(lane))
            self._lanes.append(lane)
        return lane

    async def _read(self, lane: Lane) -> None:
        reason: Exception = StreamClosed(f"replica {self.address}: stream ended")
        try:
            async for message in lane.call:
                self._deliver(lane, message)
        except grpc.aio.AioRpcError as exc:
            reason = StreamClosed(f"replica {self.address}: {exc.details() or exc.code().name}")
        except Exception as exc:  # a malformed answer: drop the call, keep serving
            log.warning("stream to %s failed: %s", self.address, exc)
            reason = StreamClosed(f"replica {self.address}: {exc}")
        finally:
            if lane in self._lanes:
                self._lanes.remove(lane)
            pending, lane.pending = lane.pending, {}
            for entry in pending.values():
                entry.queue.put_nowait(reason)

    def _deliver(self, lane: Lane, message: bytes) -> None:
        error, answer = wire.stream_parts_raw(message)
        key, found, outputs = wire.parameters(answer, FINAL, ERROR_CODE)
        entry = lane.pending.get(key.encode())
        if entry is None:
            return  # the caller gave up (deadline, left) before this answer came
        final = wire.bool_param(found.get(FINAL))
        answer += wire.length_delimited(ID_TAG, entry.caller_id)
        if error and wire.string_param(found.get(ERROR_CODE)) == "UNAVAILABLE":
            # Shutting down (a drain) or not loaded yet: like a refused call, so
            # the router retries the request on another replica.
            why = error.decode(errors="replace")
            item: Any = BackendUnavailable(f"replica {self.address}: {why}")
        elif error:
            item = wire.length_delimited(wire.STREAM_ERROR_TAG, error) + wire.stream_response(
                answer
            )
        elif final and not outputs and not entry.wants_empty_final:
            item = None  # the empty final answer only the relay asked for
        else:
            item = wire.stream_response(answer)
        if final is None and not error:
            # Not the flag protocol after all: this answer ends the request, and
            # the model's next requests take calls of their own.
            model, version, _ = wire.routing_fields(answer)
            self.flagged[(model, version)] = False
        if item is not None:
            entry.queue.put_nowait(item)
        if error or final is not False:
            del lane.pending[key.encode()]
            entry.queue.put_nowait(_END)

    async def answers(
        self, request: bytes, timeout: float | None, relayed: list[bool]
    ) -> AsyncIterator[bytes]:
        """Every answer to `request`; StreamClosed when the call broke (`relayed[0]`
        tells whether any answer was given by then)."""
        caller_id, found, _ = wire.parameters(request, EMPTY_FINAL)
        wants_empty_final = wire.bool_param(found.get(EMPTY_FINAL)) is True
        key = f"relay-{next(self._ids)}".encode()
        entry = Pending(caller_id.encode(), wants_empty_final)
        lane = self._lane()
        lane.pending[key] = entry
        loop = asyncio.get_running_loop()
        timer = None
        try:
            tail = wire.length_delimited(ID_TAG, key)
            if not wants_empty_final:
                tail += ASK_EMPTY_FINAL
            self.carried += 1
            try:
                async with lane.write_lock:
                    await lane.call.write(request + tail)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                raise StreamClosed(f"replica {self.address}: stream write failed") from None
            if timeout is not None:
                timer = loop.call_later(timeout, self._expire, lane, key)
            while (item := await entry.queue.get()) is not _END:
                if isinstance(item, Exception):
                    raise item  # StreamClosed, BackendUnavailable or DeadlineExceeded
                relayed[0] = True
                yield item
        finally:
            if timer is not None:
                timer.cancel()
            lane.pending.pop(key, None)

    def _expire(self, lane: Lane, key: bytes) -> None:
        entry = lane.pending.pop(key, None)
        if entry is not None:
            entry.queue.put_nowait(
                errors.DeadlineExceeded(f"replica {self.address}: deadline exceeded")
            )

    async def close(self) -> None:
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.call.cancel()
        readers = [lane.reader for lane in lanes if lane.reader is not None]
        await asyncio.gather(*readers, return_exceptions=True)
