"""Scale to zero at the router: hold requests for a model with no replica, release them
when one is ready, and tell the autoscaler (KEDA, through `scaler`) about demand.

Only models named with `--hold-model` are held (names come from callers, so an
open-ended set would let anyone create queues). For those, `before_forward`
holds a request while the replica table has no replica taking traffic for the
model; `on_table_change` (called whenever discovery or a replica's index
changes the table) notes the cold-start phase reached and releases the queue
as soon as a replica serves the model.

Phases the router observes today: `replica` (until discovery reports an
endpoint of the model: scheduling, image pull) and `load` (from then until the
replica serves it: process start, download, load and warm-up). Replicas that
push their own phases can report `download` and `warmup` through `observe`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Iterable

from modelport.router.demand import DemandTracker
from modelport.router.hold_queue import (
    DOWNLOAD,
    LOAD,
    PHASES,
    START,
    WARMUP,
    ColdStart,
    HoldQueue,
)
from modelport.router.replicas import ReplicaTable

log = logging.getLogger(__name__)

# The load phases replicas push (`pool.v1.ModelLoad.Phase`) -> cold-start phases.
PUSHED_PHASES = {"DOWNLOADING": DOWNLOAD, "LOADING": LOAD, "WARMING_UP": WARMUP}

# The cold start a request waited through, for the servicer's response trailer.
cold_start_of_request: contextvars.ContextVar[ColdStart | None] = contextvars.ContextVar(
    "cold_start_of_request", default=None
)

TRAILER_KEY = "x-modelport-cold-start"
# How long a request whose replica was unavailable waits before it looks again.
RETRY_PATIENCE = 0.5


class ScaleFromZero:
    def __init__(
        self,
        table: ReplicaTable,
        models: Iterable[str],
        queue_size: int = 256,
        max_hold_seconds: float = 120.0,
        idle_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.models = frozenset(models)
        self.demand = DemandTracker(idle_seconds, clock)
        self.queue = HoldQueue(queue_size, max_hold_seconds, clock, self.demand.set_held)
        # Told (model, phase or "total", seconds) for every finished cold start.
        self.on_cold_start: Callable[[str, str, float], None] | None = None
        self.cold_starts: list[tuple[str, ColdStart]] = []  # the last few, for `routes`

    def holds(self, model: str) -> bool:
        return model in self.models

    def has_replica(self, model: str) -> bool:
        return bool(self.table.candidates(model, ""))

    async def before_forward(self, model: str, deadline: float | None) -> None:
        """Hold the request while no replica serves `model` (a no-op for other models)."""
        if model not in self.models or self.has_replica(model):
            return
        released = await self.queue.hold(model, deadline)
        if released is not None and released.cold_start is not None:
            cold_start_of_request.set(released.cold_start)

    async def wait_after_failure(self, model: str, deadline: float | None, since: float) -> bool:
        """The replica a request went to was unavailable (it is going away, or still
        loading): hold the request again, briefly, and say whether to retry.

        Discovery may list a replica that already left for a moment; at zero that
        must not fail the request. Gives up after --max-hold-seconds.
        """
        now = self.queue.clock()
        if deadline is not None and deadline - now < RETRY_PATIENCE / 10:
            return False
        if now - since > self.queue.max_hold_seconds:
            return False
        released = await self.queue.hold(model, deadline, patience=RETRY_PATIENCE)
        if released is not None and released.cold_start is not None:
            cold_start_of_request.set(released.cold_start)
        return True

    def started(self, model: str) -> None:
        self.demand.started(model)

    def finished(self, model: str) -> None:
        self.demand.finished(model)

    def observe(self, model: str, phase: str) -> None:
        self.queue.observe(model, phase)

    def observe_load(self, model: str, phase: str) -> None:
        """A replica reported `model` in a load phase (DOWNLOADING, LOADING, WARMING_UP)."""
        cold_phase = PUSHED_PHASES.get(phase)
        if cold_phase is not None:
            self.queue.observe(model, cold_phase)

    def on_table_change(self) -> None:
        for model in self.queue.models():
            if any(model in r.models for r in self.table.replicas.values()):
                self.queue.observe(model, START)
            if not self.has_replica(model):
                continue
            cold = self.queue.cold_start(model)
            released = self.queue.release(model)
            if cold is not None and released:
                self._record(model, cold)
                log.info(
                    "model '%s': released %d held requests after a cold start (%s)",
                    model,
                    released,
                    cold.header(),
                )

    def _record(self, model: str, cold: ColdStart) -> None:
        self.cold_starts = [*self.cold_starts[-31:], (model, cold)]
        if self.on_cold_start is not None:
            for phase in PHASES:
                if phase in cold.durations:
                    self.on_cold_start(model, phase, cold.durations[phase])
            self.on_cold_start(model, "total", cold.total)

    async def run_idle_checks(self, period: float = 1.0) -> None:
        """Turn idle models inactive when their idle period ends (pushed to KEDA)."""
        while True:
            wait = self.demand.next_idle_check()
            await asyncio.sleep(period if wait is None else min(period, wait + 0.01))
            self.demand.tick()

    def close(self) -> None:
        self.queue.close()
