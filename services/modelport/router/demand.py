"""Per-model demand, as the autoscaler needs it: active or not, and how much.

A model is *active* while requests are held for it, in flight, or were seen in
the last `idle_seconds`; an inactive model may be scaled to zero. KEDA asks
through the external scaler contract (`IsActive`, or `StreamIsActive`, which
pushes each change as it happens, so activation does not wait for a poll or a
metrics scrape); `pending` (held + in flight) is the metric the HPA scales on
above zero, and the fallback when the stream is down.

Transport-free. Watchers get an `asyncio.Queue` of booleans: the current state
at once, then each change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class ModelDemand:
    held: int = 0
    in_flight: int = 0
    last_seen: float | None = None
    active: bool = False


class DemandTracker:
    def __init__(
        self, idle_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._models: dict[str, ModelDemand] = {}
        self._watchers: dict[str, set[asyncio.Queue[bool]]] = {}

    def _get(self, model: str) -> ModelDemand:
        return self._models.setdefault(model, ModelDemand())

    # -- what the router reports ---------------------------------------------

    def set_held(self, model: str, held: int) -> None:
        demand = self._get(model)
        demand.held = held
        demand.last_seen = self.clock()
        self._update(model, demand)

    def started(self, model: str) -> None:
        demand = self._get(model)
        demand.in_flight += 1
        demand.last_seen = self.clock()
        self._update(model, demand)

    def finished(self, model: str) -> None:
        demand = self._get(model)
        demand.in_flight = max(0, demand.in_flight - 1)
        demand.last_seen = self.clock()
        self._update(model, demand)

    def tick(self) -> None:
        """Re-evaluate idleness (called periodically): idle models turn inactive."""
        for model, demand in self._models.items():
            self._update(model, demand)

    # -- what the scaler answers -------------------------------------------------

    def is_active(self, model: str) -> bool:
        demand = self._models.get(model)
        return demand is not None and self._compute(demand)

    def pending(self, model: str) -> int:
        demand = self._models.get(model)
        # The router counts a held request as in flight too (it is being served).
        return 0 if demand is None else max(demand.held, demand.in_flight)

    def next_idle_check(self) -> float | None:
        """Seconds until some active model may turn idle (None: none can)."""
        now = self.clock()
        waits = [
            d.last_seen + self.idle_seconds - now
            for d in self._models.values()
            if d.active and d.held == 0 and d.in_flight == 0 and d.last_seen is not None
        ]
        return max(0.0, min(waits)) if waits else None

    def watch(self, model: str) -> asyncio.Queue[bool]:
        queue: asyncio.Queue[bool] = asyncio.Queue()
        queue.put_nowait(self.is_active(model))
        self._watchers.setdefault(model, set()).add(queue)
        return queue

    def unwatch(self, model: str, queue: asyncio.Queue[bool]) -> None:
        watchers = self._watchers.get(model)
        if watchers is not None:
            watchers.discard(queue)
            if not watchers:
                del self._watchers[model]

    def snapshot(self) -> dict[str, ModelDemand]:
        return dict(self._models)

    # -- internals -------------------------------------------------------------------

    def _compute(self, demand: ModelDemand) -> bool:
        if demand.held or demand.in_flight:
            return True
        if demand.last_seen is None:
            return False
        return self.clock() - demand.last_seen < self.idle_seconds

    def _update(self, model: str, demand: ModelDemand) -> None:
        active = self._compute(demand)
        if active == demand.active:
            return
        demand.active = active
        for queue in self._watchers.get(model, ()):
            queue.put_nowait(active)
