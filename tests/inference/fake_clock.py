"""A clock that moves only when the test says so, for the batcher's timing tests."""

from __future__ import annotations

import asyncio


class FakeClock:
    def __init__(self) -> None:
        self.now_ns = 1_000_000_000
        self._timers: list[tuple[int, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now_ns / 1e9

    def perf_ns(self) -> int:
        return self.now_ns

    def wall_ns(self) -> int:
        return self.now_ns

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.now_ns + round(timeout * 1e9), timer)
        self._timers.append(entry)
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            timer.cancel()
            if entry in self._timers:
                self._timers.remove(entry)
        return event.is_set()

    @property
    def waiting(self) -> int:
        """How many timed waits are pending (the scheduler holds a batch open)."""
        return len(self._timers)

    async def advance(self, seconds: float) -> None:
        """Move time on, fire the timers that are due, and let the loop run them."""
        self.now_ns += round(seconds * 1e9)
        for due, timer in list(self._timers):
            if due <= self.now_ns and not timer.done():
                timer.set_result(None)
        await settle()


async def settle(rounds: int = 20) -> None:
    """Let every ready callback run (the scheduler, done futures) without time passing."""
    for _ in range(rounds):
        await asyncio.sleep(0)
