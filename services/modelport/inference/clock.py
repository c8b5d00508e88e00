"""Time as the batcher sees it, injectable so its timing can be tested deterministically.

`SystemClock` is the real one. Tests drive a fake clock (tests/inference/
fake_clock.py) that only moves when told, so "waits at most the max queue
delay" and "a full batch goes at once" are checked without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds, for deadlines (the caller's deadline is on this clock)."""
        ...

    def perf_ns(self) -> int:
        """Nanoseconds, for queue delays and statistics."""
        ...

    def wall_ns(self) -> int:
        """Nanoseconds since the epoch, for trace span times."""
        ...

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until `event` is set (True) or `timeout` seconds pass (False)."""
        ...


class SystemClock:
    monotonic = staticmethod(time.monotonic)
    perf_ns = staticmethod(time.perf_counter_ns)
    wall_ns = staticmethod(time.time_ns)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:  # asyncio.TimeoutError is this class (Python >= 3.11)
            return False
        return True


SYSTEM_CLOCK = SystemClock()
