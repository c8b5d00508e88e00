"""Requests for a model with no ready replica wait here until one turns ready.

A model scaled to zero has no replica to forward to. Instead of failing, the
router holds each request in a bounded per-model queue, tells the autoscaler
there is demand (see `demand`), and releases the queue, oldest first, when a
replica of the model becomes ready. Each caller's deadline is honoured: a
request whose deadline passes while held gets DEADLINE_EXCEEDED; one that finds
the queue full gets RESOURCE_EXHAUSTED at once. Requests sent without a
deadline are held at most `max_hold_seconds`.

While requests are held the router times the cold start by the phases it can
observe (`ColdStart`): waiting for a replica to appear, for its process to
start, then the model's download, its load and its warm-up as the replica pushes
them (a replica that pushes nothing: all of it counts as "start"). The first
request released carries them.

Transport-free: the router's servicer maps the errors to status codes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from modelport.errors import DeadlineExceeded, QueueFull, Unavailable

# Cold-start phases in the order a replica goes through them.
WAIT_REPLICA, START = "replica", "start"
DOWNLOAD, LOAD, WARMUP = "download", "load", "warmup"
PHASES = (WAIT_REPLICA, START, DOWNLOAD, LOAD, WARMUP)


@dataclass
class ColdStart:
    """Durations of the cold-start phases seen for one model, in seconds.

    `observe(phase)` closes the phase in progress and opens `phase`; phases the
    router never saw (a replica that downloads and loads before discovery
    reports it) are simply absent, their time counted in the last phase seen.
    """

    started: float
    clock: Callable[[], float] = time.monotonic
    durations: dict[str, float] = field(default_factory=dict)
    current: str = WAIT_REPLICA
    _since: float = 0.0
    finished: float | None = None

    def __post_init__(self) -> None:
        self._since = self.started

    def observe(self, phase: str) -> None:
        if self.finished is not None or phase == self.current:
            return
        if PHASES.index(phase) < PHASES.index(self.current):
            return  # a replica restarting its load: keep counting where we are
        self._close(self.clock())
        self.current = phase

    def finish(self) -> None:
        if self.finished is None:
            now = self.clock()
            self._close(now)
            self.finished = now

    def _close(self, now: float) -> None:
        self.durations[self.current] = self.durations.get(self.current, 0.0) + (now - self._since)
        self._since = now

    @property
    def total(self) -> float:
        end = self.finished if self.finished is not None else self.clock()
        return end - self.started

    def header(self) -> str:
        """`replica=0.412,load=1.250,total=1.662` (seconds): the response trailer's value."""
        parts = [f"{p}={self.durations[p]:.3f}" for p in PHASES if p in self.durations]
        return ",".join([*parts, f"total={self.total:.3f}"])


@dataclass
class Released:
    """What a held request learns when it is let go."""

    waited: float
    # Set on the first request released after a cold start, None on the others.
    cold_start: ColdStart | None = None


@dataclass
class _Held:
    future: asyncio.Future[Released]
    since: float


@dataclass
class _ModelQueue:
    waiting: deque[_Held] = field(default_factory=deque)
    cold_start: ColdStart | None = None


class HoldQueue:
    """Bounded per-model queues of requests waiting for a ready replica.

    `on_change(model, held)` is told the number held after every change, which
    is the demand signal the scaler serves.
    """

    def __init__(
        self,
        max_per_model: int = 256,
        max_hold_seconds: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, int], None] | None = None,
    ) -> None:
        self.max_per_model = max_per_model
        self.max_hold_seconds = max_hold_seconds
        self.clock = clock
        self.on_change = on_change
        self._queues: dict[str, _ModelQueue] = {}
        self.overflows = 0
        self.expired = 0
        self.closed = False

    def held(self, model: str) -> int:
        queue = self._queues.get(model)
        return len(queue.waiting) if queue else 0

    def models(self) -> list[str]:
        return sorted(name for name, q in self._queues.items() if q.waiting)

    def cold_start(self, model: str) -> ColdStart | None:
        queue = self._queues.get(model)
        return queue.cold_start if queue else None

    async def hold(
        self, model: str, deadline: float | None, patience: float | None = None
    ) -> Released | None:
        """Wait for `release(model)`; `deadline` is absolute on `clock`.

        With `patience` (seconds), give up quietly after that long (None is
        returned): the caller looks at the replicas again and may hold again.
        """
        if self.closed:
            raise Unavailable(f"model '{model}': the router is shutting down")
        queue = self._queues.setdefault(model, _ModelQueue())
        if len(queue.waiting) >= self.max_per_model:
            self.overflows += 1
            raise QueueFull(
                f"model '{model}' has no ready replica and {self.max_per_model} requests are "
                "already waiting for one (--hold-queue-size); retry later"
            )
        now = self.clock()
        if queue.cold_start is None:
            queue.cold_start = ColdStart(started=now, clock=self.clock)
        limit = now + self.max_hold_seconds
        own_deadline = deadline is not None and deadline <= limit
        until = deadline if own_deadline and deadline is not None else limit
        quiet = patience is not None and now + patience < until
        if quiet and patience is not None:
            until = now + patience
        held = _Held(asyncio.get_running_loop().create_future(), now)
        queue.waiting.append(held)
        self._changed(model, queue)
        try:
            return await asyncio.wait_for(asyncio.shield(held.future), max(0.0, until - now))
        except TimeoutError:
            if quiet:
                return None
            self.expired += 1
            waited = self.clock() - now
            why = (
                "the request's deadline"
                if own_deadline
                else f"the longest hold ({self.max_hold_seconds:g} s, --max-hold-seconds)"
            )
            raise DeadlineExceeded(
                f"model '{model}': no replica became ready within {why}; "
                f"held {waited:.3f} s while it scales up"
            ) from None
        finally:
            if not held.future.done():
                held.future.cancel()
            self._discard(model, held)

    def observe(self, model: str, phase: str) -> None:
        """A cold-start phase of `model` began (reported by discovery or a replica)."""
        queue = self._queues.get(model)
        if queue is not None and queue.cold_start is not None:
            queue.cold_start.observe(phase)

    def release(self, model: str) -> int:
        """A replica of `model` is ready: let every held request go, oldest first."""
        queue = self._queues.get(model)
        if queue is None or not queue.waiting:
            if queue is not None:
                queue.cold_start = None
            return 0
        now = self.clock()
        cold = queue.cold_start
        if cold is not None:
            cold.finish()
        queue.cold_start = None
        released = 0
        while queue.waiting:
            held = queue.waiting.popleft()
            if held.future.done():
                continue
            held.future.set_result(Released(now - held.since, cold if released == 0 else None))
            released += 1
        self._changed(model, queue)
        return released

    def close(self) -> None:
        """Shutting down: every held request gets UNAVAILABLE (another router may serve it)."""
        self.closed = True
        for model, queue in self._queues.items():
            while queue.waiting:
                held = queue.waiting.popleft()
                if not held.future.done():
                    held.future.set_exception(
                        Unavailable(f"model '{model}': the router is shutting down")
                    )
            self._changed(model, queue)

    def _discard(self, model: str, held: _Held) -> None:
        queue = self._queues.get(model)
        if queue is None:
            return
        try:
            queue.waiting.remove(held)
        except ValueError:
            return  # released already
        if not queue.waiting:
            # Everyone gave up: the next request starts a new cold start.
            queue.cold_start = None
        self._changed(model, queue)

    def _changed(self, model: str, queue: _ModelQueue) -> None:
        if self.on_change is not None:
            self.on_change(model, len(queue.waiting))
