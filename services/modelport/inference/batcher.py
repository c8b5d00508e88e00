"""Dynamic batching: queue requests for one model version and run them together.

Requests wait in a bounded FIFO. Whenever an executor is free, the scheduler
forms a batch: rows of compatible requests (same non-batch shape) are
concatenated along dim 0 up to max_batch_size, waiting at most max_delay for
more to arrive, and cut to a preferred size when one is configured. Executions
run in a thread pool (`instances` at a time) so the event loop keeps serving,
or, for a backend whose model runs in a compute process (`run_async`), on the
event loop itself, which only sends the batch and awaits the answer; outputs
are split back per request. Requests whose caller went away or whose
deadline passed are dropped before compute. Time comes from an injectable
`Clock`; if the scheduler ever dies, a done-callback logs why and fails every
waiting request instead of leaving them hanging.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from opentelemetry.context import Context

from modelport.artifacts.config import BatchingSpec
from modelport.common import tracing
from modelport.errors import (
    DeadlineExceeded,
    Internal,
    ModelportError,
    QueueFull,
    Unavailable,
)
from modelport.inference.clock import SYSTEM_CLOCK, Clock
from modelport.inference.stats import VersionStats

log = logging.getLogger(__name__)

# Outputs per request, and (input, infer, output) nanoseconds of the execution.
ExecutionResult = tuple[list[list[np.ndarray]], tuple[int, int, int]]
RunBatch = Callable[[Sequence[np.ndarray | None]], list[np.ndarray]]


class Computed(NamedTuple):
    """What a backend that computes elsewhere answers: the outputs, and how long the
    model itself ran (the wait behind a batch staged before it is not compute)."""

    outputs: list[np.ndarray]
    run_ns: int


RunBatchAsync = Callable[[Sequence[np.ndarray | None]], Awaitable[Computed]]
# How far past the head of the queue the scheduler looks for requests whose
# shape matches the batch being formed (keeps batch forming O(batch)).
SCAN_WINDOW = 256
# libuv (uvloop) timers tick in milliseconds.
LOOP_CLOCK_RESOLUTION = 0.001


@dataclass(slots=True, eq=False)
class Pending:
    inputs: Sequence[np.ndarray | None]  # None: an optional input left out
    rows: int
    signature: tuple[tuple[int, ...], ...]
    future: asyncio.Future[list[np.ndarray]]
    enqueued_ns: int
    deadline: float | None  # clock.monotonic() seconds
    trace: Context | None = None  # the request's trace context, for queue/execute spans
    enqueued_wall_ns: int = 0


class DynamicBatcher:
    def __init__(
        self,
        label: str,
        run: RunBatch,
        *,
        max_batch_size: int,
        batching: BatchingSpec,
        instances: int,
        stats: VersionStats,
        thread_initializer: Callable[[], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        run_async: RunBatchAsync | None = None,
        in_flight: int = 1,
    ) -> None:
        self._label = label
        self._clock = clock
        self._run = run
        self._run_async = run_async  # a backend that computes elsewhere: no thread hop
        self._batching = batching.enabled and max_batch_size > 0
        self._max_rows = max_batch_size if self._batching else 0
        self._preferred = batching.preferred_sizes
        self._target_rows = max(self._preferred) if self._preferred else max_batch_size
        self._max_delay_ns = int(batching.max_delay_s * 1e9)
        self._max_queue = batching.max_queue_size
        self._default_timeout = batching.default_timeout_s
        self._stats = stats
        self._queue: deque[Pending] = deque()
        self._rows_queued = 0
        self._wakeup = asyncio.Event()
        # A backend that computes elsewhere may take the next batch while one runs
        # (`in_flight` per instance), so its model never waits for the loop.
        self._slots = asyncio.Semaphore(instances * (in_flight if run_async else 1))
        self._executor = ThreadPoolExecutor(
            instances, thread_name_prefix=f"exec-{label}", initializer=thread_initializer
        )
        self._active = 0
        self._closing = False
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._broken: BaseException | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._schedule())
        self._task.add_done_callback(self._scheduler_done)

    def _scheduler_done(self, task: asyncio.Task[None]) -> None:
        """The scheduler only ends by cancellation (close); anything else is a bug that
        must not leave requests waiting forever."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("%s: batch scheduler died; failing queued requests", self._label, exc_info=error)
        self._broken = error
        failure = Internal(f"{self._label}: batch scheduler failed ({type(error).__name__})")
        while self._queue:
            item = self._pop()
            if not item.future.done():
                item.future.set_exception(failure)
        self._stats.queue_depth = 0
        self._idle.set()

    async def submit(
        self,
        inputs: Sequence[np.ndarray | None],
        rows: int,
        signature: tuple[tuple[int, ...], ...],
        deadline: float | None,
    ) -> list[np.ndarray]:
        """Queue one request; returns its outputs (config order)."""
        if self._closing:
            raise Unavailable(f"{self._label} is unloading")
        if self._broken is not None:
            raise Internal(f"{self._label}: batch scheduler failed; reload the model")
        if len(self._queue) >= self._max_queue:
            raise QueueFull(f"{self._label}: queue is full ({self._max_queue} requests waiting)")
        clock = self._clock
        if deadline is None and self._default_timeout is not None:
            deadline = clock.monotonic() + self._default_timeout
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        self._queue.append(
            Pending(
                inputs,
                rows,
                signature,
                future,
                clock.perf_ns(),
                deadline,
                tracing.capture(),
                clock.wall_ns(),
            )
        )
        self._rows_queued += rows
        self._stats.queue_depth = len(self._queue)
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Finish everything queued or running, then stop; new submits are refused."""
        self._closing = True
        self._wakeup.set()
        if (self._queue or self._active) and self._broken is None:
            self._idle.clear()
            await self._idle.wait()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=False)

    # -- scheduling (event loop) ------------------------------------------------

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._slots.acquire()
            if self._batching and self._max_delay_ns and not self._closing:
                await self._wait_for_rows()
            batch = self._take_batch()
            taken = self._clock.wall_ns()
            for item in batch:
                tracing.record_span(
                    tracing.INFERENCE_QUEUE,
                    parent=item.trace,
                    start_ns=item.enqueued_wall_ns,
                    end_ns=taken,
                )
            if not batch:
                self._slots.release()
                self._maybe_idle()
                continue
            self._active += 1
            done: asyncio.Future[ExecutionResult]
            if self._run_async is not None:
                done = asyncio.ensure_future(self._execute_async(batch))
            else:
                done = loop.run_in_executor(self._executor, self._execute, batch)
            done.add_done_callback(functools.partial(self._finish, batch))

    async def _wait_for_rows(self) -> None:
        """Hold a free executor until the batch is full or the oldest request's delay ends."""
        if not self._queue:
            return
        deadline_ns = self._queue[0].enqueued_ns + self._max_delay_ns
        while self._rows_queued < self._target_rows and not self._closing:
            remaining = (deadline_ns - self._clock.perf_ns()) / 1e9
            if remaining <= 0:
                return
            self._wakeup.clear()
            if remaining < LOOP_CLOCK_RESOLUTION:
                # A shorter timer fires at once, and re-arming it would spin the
                # loop (and hold the GIL) for the whole delay: let the requests
                # that already arrived in, once, and take the batch.
                await asyncio.sleep(0)
                return
            if not await self._clock.wait(self._wakeup, remaining):
                return

    def _take_batch(self) -> list[Pending]:
        now = self._clock.monotonic()
        now_ns = self._clock.perf_ns()
        batch: list[Pending] = []
        skipped: list[Pending] = []
        rows = 0
        queue = self._queue
        while queue and len(skipped) < SCAN_WINDOW:
            item = queue[0]
            if item.future.done():  # the caller cancelled
                self._pop()
                continue
            if item.deadline is not None and now > item.deadline:
                self._pop()
                item.future.set_exception(
                    DeadlineExceeded(f"{self._label}: deadline passed after queueing")
                )
                continue
            if not self._batching:
                batch.append(self._pop())
                break
            if batch and item.signature != batch[0].signature:
                skipped.append(self._pop())
                continue
            if rows + item.rows > self._max_rows:
                break
            batch.append(self._pop())
            rows += item.rows
            if rows == self._max_rows:
                break
        if self._preferred and rows not in self._preferred:
            batch = self._trim_to_preferred(batch, skipped)
        for item in reversed(skipped):
            queue.appendleft(item)
            self._rows_queued += item.rows
        self._stats.queue_depth = len(queue)
        for item in batch:
            self._stats.queued(now_ns - item.enqueued_ns)
        return batch

    def _trim_to_preferred(self, batch: list[Pending], skipped: list[Pending]) -> list[Pending]:
        """Cut the batch back to the largest preferred size it can exactly reach."""
        totals, running = [], 0
        for item in batch:
            running += item.rows
            totals.append(running)
        for size in reversed(self._preferred):
            if size in totals:
                keep = totals.index(size) + 1
                skipped[:0] = batch[keep:]
                return batch[:keep]
        return batch

    def _pop(self) -> Pending:
        item = self._queue.popleft()
        self._rows_queued -= item.rows
        return item

    def _finish(self, batch: list[Pending], done: asyncio.Future[ExecutionResult]) -> None:
        self._slots.release()
        self._active -= 1
        error = done.exception()
        if error is not None:
            if not isinstance(error, ModelportError):
                log.error("%s: execution failed", self._label, exc_info=error)
                error = Internal(f"{self._label}: execution failed: {error}")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
        else:
            result = done.result()
            per_request, (input_ns, infer_ns, output_ns) = result
            rows = sum(item.rows for item in batch)
            self._stats.executed(len(batch), rows, input_ns, infer_ns, output_ns)
            for item, outputs in zip(batch, per_request, strict=True):
                if not item.future.done():
                    item.future.set_result(outputs)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self._closing and not self._queue and not self._active:
            self._idle.set()

    # -- execution (executor thread, or the loop for a compute process) ----------

    def _execute(self, batch: list[Pending]) -> ExecutionResult:
        t0 = self._clock.perf_ns()
        arrays = _assemble(batch)
        t1 = self._clock.perf_ns()
        with tracing.span(
            tracing.INFERENCE_EXECUTE, parent=batch[0].trace, batch_size=sum(i.rows for i in batch)
        ):
            outputs = self._run(arrays)
        t2 = self._clock.perf_ns()
        per_request = _split(self._label, batch, outputs)
        return per_request, (t1 - t0, t2 - t1, self._clock.perf_ns() - t2)

    async def _execute_async(self, batch: list[Pending]) -> ExecutionResult:
        """The same, on the event loop: the backend's model runs in another process,
        so there is nothing to wait for here but its answer."""
        assert self._run_async is not None
        t0 = self._clock.perf_ns()
        arrays = _assemble(batch)
        t1 = self._clock.perf_ns()
        with tracing.span(
            tracing.INFERENCE_EXECUTE, parent=batch[0].trace, batch_size=sum(i.rows for i in batch)
        ):
            outputs, run_ns = await self._run_async(arrays)
        t2 = self._clock.perf_ns()
        per_request = _split(self._label, batch, outputs)
        # Compute time is the model's own: the wait behind a staged batch is not.
        return per_request, (t1 - t0, run_ns or t2 - t1, self._clock.perf_ns() - t2)


def _assemble(batch: list[Pending]) -> Sequence[np.ndarray | None]:
    """The batch's inputs, concatenated along dim 0 (one copy; none for one request).

    Requests batch together only with equal signatures, so an optional input is
    left out by all of them or by none."""
    if len(batch) == 1:
        return batch[0].inputs
    return [
        None
        if batch[0].inputs[i] is None
        else np.concatenate([item.inputs[i] for item in batch], axis=0)
        for i in range(len(batch[0].inputs))
    ]


def _split(label: str, batch: list[Pending], outputs: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Each request's rows of the outputs (views)."""
    if len(batch) == 1:
        return [outputs]
    total = sum(item.rows for item in batch)
    for output in outputs:
        if output.ndim == 0 or output.shape[0] != total:
            raise Internal(
                f"{label}: an output has shape {list(output.shape)}; "
                f"a batch of {total} rows needs dim 0 = {total}"
            )
    per_request, start = [], 0
    for item in batch:
        end = start + item.rows
        per_request.append([output[start:end] for output in outputs])
        start = end
    return per_request
