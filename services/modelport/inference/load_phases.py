"""Models on their way to serving, by phase: downloading, loading, warming up.

The replica pushes these to routers (`modelport.pool.v1.PoolReplica/Watch`), so a
cold start is visible while it is waited for. Phases are entered on the event
loop; a worker thread enters them through `from_thread`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

DOWNLOADING = "DOWNLOADING"
LOADING = "LOADING"
WARMING_UP = "WARMING_UP"


@dataclass
class Load:
    name: str
    version: str
    phase: str
    started: float  # the load
    phase_started: float


class LoadPhases:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._loads: dict[str, Load] = {}
        self.listeners: list[Callable[[], None]] = []  # told after every change

    def enter(self, name: str, phase: str, version: str = "") -> None:
        now = self.clock()
        load = self._loads.get(name)
        if load is None:
            self._loads[name] = Load(name, version, phase, now, now)
        else:
            load.phase, load.phase_started = phase, now
            load.version = version or load.version
        self._notify()

    def done(self, name: str) -> None:
        if self._loads.pop(name, None) is not None:
            self._notify()

    def from_thread(self, loop: asyncio.AbstractEventLoop) -> Callable[[str, str, str], None]:
        """`enter` for a worker thread: run on `loop`."""

        def enter(name: str, phase: str, version: str) -> None:
            loop.call_soon_threadsafe(self.enter, name, phase, version)

        return enter

    def now(self) -> list[tuple[Load, float, float]]:
        """Each load with the seconds in its phase and in all."""
        now = self.clock()
        return [(x, now - x.phase_started, now - x.started) for x in self._loads.values()]

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener()
