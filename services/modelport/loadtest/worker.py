"""One load-generating process: its own event loop, channel and share of the load.

Requests are serialized once by the parent and sent as bytes (grpc passes bytes
through when no serializer is given), and responses are not parsed: the
generator pays for the transport only. Closed loop: N callers each send the next
request when the previous one is answered. Open loop: requests go out on a
fixed schedule whatever the server does, and latency counts from the scheduled
time, so a slow server cannot slow the generator into hiding its own queueing
(coordinated omission). How far sends fell behind the schedule is recorded:
that is the generator's own saturation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import grpc

from modelport.client.channel import TlsOptions, aio_channel
from modelport.loadtest.recorder import (
    CLIENT_ERROR,
    STREAM_ERROR,
    RequestLog,
    status_number,
)

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
# ModelStreamInferResponse puts error_message (field 1, length-delimited: tag 0x0A)
# first when set; a successful answer starts with infer_response (tag 0x12).
_STREAM_ERROR_TAG = 0x0A
# Counters shared with the parent for the live display: ok, errors, in flight.
COUNTERS = 3


@dataclass(frozen=True)
class WorkerPlan:
    index: int
    workers: int
    url: str
    tls: TlsOptions | None
    requests: list[bytes]
    streaming: bool
    concurrency: int  # closed loop: callers in this process (0 in open loop)
    rate: float  # open loop: total requests/s across all workers (0 in closed loop)
    warmup_s: float
    duration_s: float
    timeout_s: float
    channels: int = 1
    api_key: str | None = None


@dataclass
class WorkerResult:
    index: int
    log: RequestLog
    cpu_s: float
    wall_s: float
    error: str = ""


class _Run:
    def __init__(self, plan: WorkerPlan, counters: Any, t0_ns: int) -> None:
        self.plan = plan
        self.counters = counters
        self.base = plan.index * COUNTERS
        self.t0 = t0_ns
        self.end = t0_ns + int((plan.warmup_s + plan.duration_s) * 1e9)
        self.log = RequestLog()
        self.channels = [
            aio_channel(
                plan.url, plan.tls, plan.api_key, extra=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(max(1, plan.channels))
        ]
        self.unary: list[Any] = [ch.unary_unary(INFER_METHOD) for ch in self.channels]
        self.streams: list[Any] = [ch.stream_stream(STREAM_METHOD) for ch in self.channels]

    def _done(self, due_ns: int, code: int, lag_ns: int) -> None:
        now = time.monotonic_ns()
        self.log.record(due_ns - self.t0, now - due_ns, code, lag_ns)
        self.counters[self.base + (0 if code == 0 else 1)] += 1

    async def _unary(self, caller: int, payload: bytes, due_ns: int, lag_ns: int = 0) -> None:
        self.counters[self.base + 2] += 1
        try:
            await self.unary[caller % len(self.unary)](payload, timeout=self.plan.timeout_s)
            code = 0
        except grpc.aio.AioRpcError as error:
            code = status_number(error.code())
        except Exception:
            code = CLIENT_ERROR
        self.counters[self.base + 2] -= 1
        self._done(due_ns, code, lag_ns)

    def _first_position(self, caller: int) -> int:
        # Callers start at different requests so a request file's variety is spread out.
        return (self.plan.index * max(1, self.plan.concurrency) + caller) * 7919

    async def closed_caller(self, caller: int) -> None:
        requests = self.plan.requests
        position = self._first_position(caller)
        while (now := time.monotonic_ns()) < self.end:
            await self._unary(caller, requests[position % len(requests)], now)
            position += 1

    async def stream_caller(self, caller: int) -> None:
        """Closed loop over one bidirectional stream: write, read the answer, repeat."""
        requests = self.plan.requests
        position = self._first_position(caller)
        call = self.streams[caller % len(self.streams)](timeout=None)
        try:
            while (now := time.monotonic_ns()) < self.end:
                self.counters[self.base + 2] += 1
                try:
                    await call.write(requests[position % len(requests)])
                    answer: Any = await asyncio.wait_for(call.read(), self.plan.timeout_s)
                    if answer is grpc.aio.EOF:
                        code = status_number(await call.code())
                        code = code or CLIENT_ERROR
                    else:
                        code = STREAM_ERROR if answer[:1] == bytes([_STREAM_ERROR_TAG]) else 0
                except grpc.aio.AioRpcError as error:
                    code = status_number(error.code())
                except TimeoutError:
                    code = status_number(grpc.StatusCode.DEADLINE_EXCEEDED)
                self.counters[self.base + 2] -= 1
                self._done(now, code, 0)
                if code not in (0, STREAM_ERROR):
                    await asyncio.sleep(0.01)  # the stream is dead: open a new one
                    call.cancel()
                    call = self.streams[caller % len(self.streams)](timeout=None)
                position += 1
        finally:
            call.cancel()

    async def open_loop(self) -> None:
        plan = self.plan
        interval_ns = 1e9 / plan.rate
        requests = plan.requests
        pending: set[asyncio.Task[None]] = set()
        k = 0
        while True:
            slot = k * plan.workers + plan.index
            due = self.t0 + int(slot * interval_ns)
            if due >= self.end:
                break
            now = time.monotonic_ns()
            # Event-loop timers have millisecond resolution and may fire early: never send
            # before the scheduled time, or latency counted from it would look shorter.
            while due > now:
                await asyncio.sleep((due - now) / 1e9)
                now = time.monotonic_ns()
            task = asyncio.create_task(
                self._unary(k, requests[slot % len(requests)], due, max(0, now - due))
            )
            pending.add(task)
            task.add_done_callback(pending.discard)
            k += 1
        if pending:
            await asyncio.wait(pending, timeout=plan.timeout_s + 1)

    async def run(self) -> None:
        plan = self.plan
        while (now := time.monotonic_ns()) < self.t0:  # timers may fire early
            await asyncio.sleep((self.t0 - now) / 1e9)
        if plan.rate > 0:
            await self.open_loop()
            return
        caller = self.stream_caller if plan.streaming else self.closed_caller
        await asyncio.gather(*(caller(i) for i in range(plan.concurrency)))

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def _connect(run: _Run, timeout_s: float) -> None:
    for channel in run.channels:
        await asyncio.wait_for(channel.channel_ready(), timeout_s)


READY, FAILED = 1, 2
ABORT = -1


def run_worker(plan: WorkerPlan, counters: Any, states: Any, start: Any, results: Any) -> None:
    """Process entry point: connect, say ready, wait for the shared start time, run, report.

    `states[index]` becomes READY or FAILED; the parent then sets `start` to a
    CLOCK_MONOTONIC time in ns (which all processes on the machine read alike),
    or to ABORT when a worker could not connect.
    """
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def main() -> WorkerResult:
        run = _Run(plan, counters, 0)
        error = ""
        cpu = wall = 0.0
        try:
            try:
                await _connect(run, 30)
            except Exception as exc:
                states[plan.index] = FAILED
                raise ConnectionError(f"cannot connect to {plan.url}: {exc!r}") from exc
            states[plan.index] = READY
            while start.value == 0:
                await asyncio.sleep(0.005)
            if start.value != ABORT:
                run.t0 = start.value
                run.end = run.t0 + int((plan.warmup_s + plan.duration_s) * 1e9)
                cpu0, wall0 = time.process_time(), time.monotonic()
                await run.run()
                cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        except Exception as exc:  # reported to the parent, which fails the run
            error = f"{type(exc).__name__}: {exc}"
        finally:
            await run.close()
        return WorkerResult(plan.index, run.log, cpu, wall, error)

    results.put(asyncio.run(main()))
