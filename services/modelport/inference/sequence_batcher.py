"""Sequence batching: stateful models, whose requests come in correlated sequences.

Each request names a correlation id (uint64 or string) and whether it starts or
ends its sequence. A sequence holds a place on one executor ("lane") from its
first request to its last, and its requests run one at a time, in arrival
order, so a model (or the implicit state the server keeps for it) sees them in
order. Sequences that find no free place wait in a backlog.

- `direct`: every lane has max_batch_size slots (one without batching); a
  sequence owns one slot and always runs in that batch row. Rows of slots with
  nothing to run are padding, marked READY=false.
- `oldest`: every lane keeps up to max_candidates sequences and batches the
  oldest waiting request of each, one request per sequence per batch.

The server fills the control inputs (START, END, READY, CORRID) and the
implicit state (`state`: the output of one request becomes the input of the
next, starting from the initial state). A sequence with nothing queued for
max_idle_s is reclaimed; a later request without START is then refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from modelport.artifacts.sequences import CORRID, CorrelationId, SequenceSpec
from modelport.errors import (
    DeadlineExceeded,
    Internal,
    InvalidInput,
    ModelportError,
    QueueFull,
    Unavailable,
)
from modelport.inference.sequence_layout import Arrays, BatchLayout, Slot
from modelport.inference.stats import VersionStats

log = logging.getLogger(__name__)

RunNamed = Callable[[Arrays], Arrays]
DEFAULT_MAX_QUEUE = 1024


@dataclass(slots=True, eq=False)
class _Request:
    inputs: Arrays
    start: bool
    end: bool
    signature: tuple[tuple[int, ...], ...]
    future: asyncio.Future[Arrays]
    enqueued_ns: int
    deadline: float | None


@dataclass(slots=True, eq=False)
class _Sequence:
    corrid: CorrelationId
    last_seen: float
    queue: deque[_Request] = field(default_factory=deque)
    state: Arrays = field(default_factory=dict)
    lane: _Lane | None = None
    slot: int = -1
    running: bool = False


@dataclass(slots=True, eq=False)
class _Lane:
    index: int
    slots: list[_Sequence | None]
    busy: bool = False


@dataclass(slots=True)
class _Row:
    row: int
    sequence: _Sequence
    request: _Request


class SequenceBatcher:
    def __init__(
        self,
        model: str,
        label: str,
        run: RunNamed,
        spec: SequenceSpec,
        *,
        max_batch_size: int,
        instances: int,
        stats: VersionStats,
        max_queue: int = DEFAULT_MAX_QUEUE,
        clock: Callable[[], float] = time.monotonic,
        thread_initializer: Callable[[], None] | None = None,
    ) -> None:
        self._model = model
        self._label = label
        self._run = run
        self._spec = spec
        self._batched = max_batch_size > 0
        self._max_rows = max(max_batch_size, 1)
        places = self._max_rows if spec.strategy == "direct" else spec.max_candidates
        self._lanes = [_Lane(i, [None] * max(places, 1)) for i in range(max(instances, 1))]
        self._stats = stats
        self._max_queue = max_queue
        self._clock = clock
        self._corrid_control = next((c for c in spec.controls if c.kind == CORRID), None)
        self._layout = BatchLayout(spec, batched=self._batched)
        self._sequences: dict[CorrelationId, _Sequence] = {}
        self._backlog: deque[_Sequence] = deque()
        self._pending = 0
        self._running = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(
            len(self._lanes), thread_name_prefix=f"seq-{model}", initializer=thread_initializer
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._schedule())

    @property
    def active_sequences(self) -> int:
        return sum(1 for lane in self._lanes for s in lane.slots if s is not None)

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    async def submit(
        self,
        corrid: CorrelationId,
        start: bool,
        end: bool,
        inputs: Arrays,
        deadline: float | None,
    ) -> Arrays:
        """Queue one request of a sequence; returns every output the model gave."""
        self._check(corrid, start, inputs)
        if self._pending >= self._max_queue:
            raise QueueFull(f"{self._label}: queue is full ({self._max_queue} requests waiting)")
        sequence = self._sequences.get(corrid)
        if sequence is None:
            sequence = _Sequence(corrid, self._clock())
            self._sequences[corrid] = sequence
            self._backlog.append(sequence)
        elif start:
            log.warning(
                "%s: sequence %s started again before it ended; it goes on in its slot",
                self._label,
                corrid,
            )
        if end:
            # Later requests with this id belong to a new sequence (they need START).
            del self._sequences[corrid]
        signature = tuple(a.shape[1:] if self._batched else a.shape for a in inputs.values())
        future: asyncio.Future[Arrays] = asyncio.get_running_loop().create_future()
        request = _Request(inputs, start, end, signature, future, time.perf_counter_ns(), deadline)
        sequence.queue.append(request)
        sequence.last_seen = self._clock()
        self._pending += 1
        self._stats.queue_depth = self._pending
        self._wakeup.set()
        return await future

    def _check(self, corrid: CorrelationId, start: bool, inputs: Arrays) -> None:
        if corrid == 0 or corrid == "":
            raise InvalidInput(
                f"inference request to model '{self._model}' must specify a non-zero or "
                "non-empty correlation ID"
            )
        if self._closing and corrid not in self._sequences:
            raise Unavailable(f"{self._label} is unloading: no new sequences")
        if not start and corrid not in self._sequences:
            raise InvalidInput(
                f"inference request for sequence {corrid} to model '{self._model}' must "
                "specify the START flag on the first request of the sequence"
            )
        if self._batched and any(a.shape[:1] != (1,) for a in inputs.values()):
            raise InvalidInput(
                f"inference request to model '{self._model}' must specify batch-size 1 "
                "due to requirements of sequence batcher"
            )
        control = self._corrid_control
        if control is None or control.dtype == np.object_:
            return
        if isinstance(corrid, str):
            raise InvalidInput(
                f"inference request to model '{self._model}': correlation ID '{corrid}' is "
                f"a string, the model's CORRID control input '{control.name}' takes "
                f"{control.dtype.name} (use a uint64 sequence_id)"
            )
        limits = np.iinfo(control.dtype)
        if not limits.min <= corrid <= limits.max:
            raise InvalidInput(
                f"inference request to model '{self._model}': correlation ID {corrid} does "
                f"not fit the CORRID control input '{control.name}' ({control.dtype.name})"
            )

    async def close(self) -> None:
        """Finish every queued and running request, then stop; no new sequences start."""
        self._closing = True
        self._wakeup.set()
        if self._pending or self._running:
            self._idle.clear()
            await self._idle.wait()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=False)

    # -- scheduling (event loop) ------------------------------------------------

    async def _schedule(self) -> None:
        while True:
            self._wakeup.clear()
            wait = self._dispatch()
            if self._closing and not self._pending and not self._running:
                self._idle.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait)

    def _dispatch(self) -> float | None:
        """Reclaim idle sequences, place waiting ones, start what can run.

        Returns how long to sleep before something is due (None: until woken).
        """
        waits = [self._reclaim_idle()]
        self._place_backlog()
        for lane in self._lanes:
            if lane.busy:
                continue
            rows, wait = self._form(lane)
            waits.append(wait)
            if rows:
                self._launch(lane, rows)
        due = [w for w in waits if w is not None]
        return max(min(due), 0.001) if due else None

    def _reclaim_idle(self) -> float | None:
        now, limit, soonest = self._clock(), self._spec.max_idle_s, None
        for lane in self._lanes:
            for slot, sequence in enumerate(lane.slots):
                if sequence is None or sequence.queue or sequence.running:
                    continue
                idle = now - sequence.last_seen
                if idle < limit:
                    soonest = limit - idle if soonest is None else min(soonest, limit - idle)
                    continue
                log.info("%s: sequence %s idle for %.3fs, reclaimed", self._label,
                         sequence.corrid, idle)  # fmt: skip
                self._release(lane, slot, sequence)
        return soonest

    def _release(self, lane: _Lane, slot: int, sequence: _Sequence) -> None:
        lane.slots[slot] = None
        sequence.lane = None
        if self._sequences.get(sequence.corrid) is sequence:
            del self._sequences[sequence.corrid]

    def _place_backlog(self) -> None:
        """Give waiting sequences free places, oldest first, on the emptiest lane."""
        while self._backlog:
            free = [
                (sum(s is not None for s in lane.slots), lane.index, lane.slots.index(None))
                for lane in self._lanes
                if None in lane.slots
            ]
            if not free:
                return
            _, lane_index, slot = min(free)
            sequence = self._backlog.popleft()
            lane = self._lanes[lane_index]
            lane.slots[slot] = sequence
            sequence.lane, sequence.slot = lane, slot

    def _head(self, sequence: _Sequence) -> _Request | None:
        """The sequence's next runnable request; cancelled or expired ones are dropped."""
        now = time.monotonic()
        while sequence.queue:
            request = sequence.queue[0]
            if request.future.done():
                self._drop(sequence)
                continue
            if request.deadline is not None and now > request.deadline:
                self._drop(sequence)
                request.future.set_exception(
                    DeadlineExceeded(f"{self._label}: deadline passed after queueing")
                )
                continue
            return request
        return None

    def _drop(self, sequence: _Sequence) -> _Request:
        request = sequence.queue.popleft()
        self._pending -= 1
        self._stats.queue_depth = self._pending
        if request.end and sequence.lane is not None:
            self._release(sequence.lane, sequence.slot, sequence)
        return request

    def _form(self, lane: _Lane) -> tuple[list[_Row], float | None]:
        ready: list[tuple[int, _Sequence, _Request]] = []
        for slot, sequence in enumerate(lane.slots):
            if sequence is None or sequence.running:
                continue
            head = self._head(sequence)
            if head is not None:
                ready.append((slot, sequence, head))
        if not ready:
            return [], None
        oldest = min(ready, key=lambda r: r[2].enqueued_ns)
        signature = self._signature(oldest[1], oldest[2])
        same = [r for r in ready if self._signature(r[1], r[2]) == signature]
        if self._spec.strategy == "direct":
            rows = [_Row(slot, seq, req) for slot, seq, req in same]
            enough = len(rows) / len(lane.slots) >= self._spec.minimum_slot_utilization
        else:
            same.sort(key=lambda r: r[2].enqueued_ns)
            same = same[: self._max_rows]
            rows = [_Row(i, seq, req) for i, (_, seq, req) in enumerate(same)]
            target = max(self._spec.preferred_sizes or (self._max_rows,))
            enough = len(rows) >= target
            if self._spec.preferred_sizes and len(rows) not in self._spec.preferred_sizes:
                fits = [p for p in self._spec.preferred_sizes if p <= len(rows)]
                if fits and enough:
                    rows = rows[: max(fits)]
        delay = self._spec.max_queue_delay_s
        if delay and self._batched and not enough and not self._closing:
            waited = (time.perf_counter_ns() - oldest[2].enqueued_ns) / 1e9
            if waited < delay:
                return [], delay - waited
        return rows, None

    def _signature(self, sequence: _Sequence, request: _Request) -> tuple[object, ...]:
        states = tuple(self._state_in(sequence, request, s.input).shape for s in self._spec.states)
        return request.signature, states

    def _state_in(self, sequence: _Sequence, request: _Request, name: str) -> np.ndarray:
        if not request.start and name in sequence.state:
            return sequence.state[name]
        state = next(s for s in self._spec.states if s.input == name)
        return state.initial[np.newaxis] if self._batched else state.initial

    def _launch(self, lane: _Lane, rows: list[_Row]) -> None:
        now_ns = time.perf_counter_ns()
        for r in rows:
            self._drop_running(r.sequence)
            self._stats.queued(now_ns - r.request.enqueued_ns)
        lane.busy = True
        self._running += 1
        slots = [
            Slot(r.row, r.request.inputs, r.request.start, r.request.end, r.sequence.corrid,
                 {s.input: self._state_in(r.sequence, r.request, s.input)
                  for s in self._spec.states})
            for r in rows
        ]  # fmt: skip
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self._execute, slots)
        done.add_done_callback(functools.partial(self._finish, lane, rows))

    def _drop_running(self, sequence: _Sequence) -> None:
        sequence.queue.popleft()
        sequence.running = True
        self._pending -= 1
        self._stats.queue_depth = self._pending

    def _finish(self, lane: _Lane, rows: list[_Row], done: asyncio.Future[object]) -> None:
        lane.busy = False
        self._running -= 1
        error = done.exception()
        results: list[Arrays] = []
        if error is None:
            executed: tuple[list[Arrays], tuple[int, int, int]] = done.result()  # type: ignore[assignment]
            results, timings = executed
            self._stats.executed(len(rows), len(rows), *timings)
        elif not isinstance(error, ModelportError):
            log.error("%s: execution failed", self._label, exc_info=error)
            error = Internal(f"{self._label}: execution failed: {error}")
        now = self._clock()
        for i, r in enumerate(rows):
            sequence = r.sequence
            sequence.running = False
            sequence.last_seen = now
            if error is None:
                outputs = results[i]
                for state in self._spec.states:
                    sequence.state[state.input] = outputs[state.output].copy()
                if not r.request.future.done():
                    r.request.future.set_result(outputs)
            elif not r.request.future.done():
                r.request.future.set_exception(error)
            if r.request.end and sequence.lane is lane:
                self._release(lane, sequence.slot, sequence)
        self._wakeup.set()

    # -- execution (executor thread) ----------------------------------------------

    def _execute(self, rows: list[Slot]) -> tuple[list[Arrays], tuple[int, int, int]]:
        t0 = time.perf_counter_ns()
        arrays = self._layout.assemble(rows)
        t1 = time.perf_counter_ns()
        outputs = self._run(arrays)
        t2 = time.perf_counter_ns()
        per_row = self._layout.split(rows, outputs, self._label)
        return per_row, (t1 - t0, t2 - t1, time.perf_counter_ns() - t2)
