"""A pool replica's models under a memory budget: load on demand, evict least recently used.

`use(name)` is how a request gets a model: an async context manager that
loads the model if it is not resident, pins it while the request runs, and
unpins it after. The cache keeps these promises:

- **never over budget**: bytes are charged before a load starts (the model's
  estimate, from the registry or the artifact's size) and replaced by the size
  measured once it is loaded; a load waits until evicting idle models (or the
  end of other requests) makes room, and the sum of what is resident, loading
  and unloading never exceeds `budget_bytes`;
- **no race between load, infer and unload**: a pinned model is never evicted;
  a model being unloaded is waited for, then loaded again;
- **single flight**: concurrent first requests for one model share one load;
- **lowest priority, then least recently used, first**: eviction takes an idle
  model of the lowest priority (the registry's pool placement), and among those
  the one whose last request ended longest ago.

A model bigger than the whole budget, or measured bigger than its charge when
the rest cannot be freed, is refused with RESOURCE_EXHAUSTED and unloaded.

Transport-free and backend-agnostic: `load(name)` returns a `Loaded` (the
model and its measured bytes) and `unload(name, model)` frees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from modelport.errors import DeadlineExceeded, QueueFull

T = TypeVar("T")
log = logging.getLogger(__name__)

LOADING, READY, UNLOADING = "LOADING", "READY", "UNLOADING"


@dataclass(frozen=True)
class Loaded(Generic[T]):
    model: T
    size_bytes: int


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0  # loads started
    joins: int = 0  # requests that waited on another request's load
    evictions: int = 0
    load_failures: int = 0
    load_seconds: list[float] = field(default_factory=list)


@dataclass(eq=False)
class _Entry(Generic[T]):
    name: str
    state: str
    charged: int  # bytes counted against the budget
    ready: asyncio.Future[None]  # settles when LOADING/UNLOADING ends
    pins: int = 0  # requests using the model now
    waiters: int = 0  # requests waiting for its load: not evicted under them
    model: T | None = None


class ModelCache(Generic[T]):
    def __init__(
        self,
        budget_bytes: int,
        load: Callable[[str], Awaitable[Loaded[T]]],
        unload: Callable[[str, T], Awaitable[None]],
        estimate: Callable[[str], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] | None = None,
        priority: Callable[[str], int] | None = None,
    ) -> None:
        self.budget_bytes = budget_bytes
        self._load = load
        self._unload = unload
        self._estimate = estimate or (lambda name: 0)
        self._priority = priority or (lambda name: 0)
        self.clock = clock
        self.on_change = on_change  # told after every state change (reports, metrics)
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()  # least recently used first
        self._room = asyncio.Condition()  # held while making room; notified when room may appear
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = CacheStats()

    # -- what callers see -----------------------------------------------------------

    @property
    def charged_bytes(self) -> int:
        return sum(e.charged for e in self._entries.values())

    def state(self) -> dict[str, tuple[str, int, int]]:
        """name -> (state, bytes charged, requests pinning it), least recently used first."""
        return {n: (e.state, e.charged, e.pins) for n, e in self._entries.items()}

    @contextlib.asynccontextmanager
    async def use(self, name: str, deadline: float | None = None) -> AsyncIterator[T]:
        """The model `name`, loaded if needed, pinned until the block exits.

        `deadline` (absolute, on `clock`) bounds the wait for room and for the load.
        """
        entry = await self._acquire(name, deadline)
        try:
            assert entry.model is not None
            yield entry.model
        finally:
            entry.pins -= 1
            if entry.pins == 0 and self._entries.get(name) is entry:
                self._entries.move_to_end(name)  # most recently used last
            self._spawn(self._notify())

    async def evict(self, name: str, deadline: float | None = None) -> None:
        """Unload `name` as soon as no request uses it (its load, if running, ends
        first): the next `use` loads it afresh (another version, say)."""
        while (entry := self._entries.get(name)) is not None:
            if entry.state != READY:
                try:
                    await self._wait(asyncio.shield(entry.ready), name, deadline)
                except DeadlineExceeded:
                    raise
                except Exception:
                    pass  # the load failed: nothing is left to evict
                continue
            async with self._room:
                if self._entries.get(name) is entry and entry.state == READY and not entry.pins:
                    await self._evict(entry)
                    self._room.notify_all()
                    return
                await self._wait(self._room.wait(), name, deadline)

    async def close(self) -> None:
        """Unload every idle model; loads in progress finish first."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._room:
            for entry in [e for e in self._entries.values() if _idle(e)]:
                await self._evict(entry)

    # -- acquiring -------------------------------------------------------------------

    async def _acquire(self, name: str, deadline: float | None) -> _Entry[T]:
        first_look = True
        while True:
            entry = self._entries.get(name)
            if entry is not None and entry.state == READY:
                entry.pins += 1
                if first_look:
                    self.stats.hits += 1
                return entry
            first_look = False
            if entry is None:
                estimate = max(0, self._estimate(name))
                if estimate > self.budget_bytes:
                    raise QueueFull(
                        f"model '{name}' needs about {estimate} bytes, more than this "
                        f"replica's memory budget of {self.budget_bytes} bytes"
                    )
                await self._make_room(estimate, name, deadline)
                if name in self._entries:
                    continue  # another request started it while this one waited for room
                entry = self._begin_load(name, estimate)
            elif entry.state == LOADING:
                self.stats.joins += 1
            # LOADING: wait for that load (single flight); UNLOADING: wait, then load.
            entry.waiters += 1
            try:
                await self._wait(asyncio.shield(entry.ready), name, deadline)
            finally:
                entry.waiters -= 1

    def _begin_load(self, name: str, estimate: int) -> _Entry[T]:
        """Charge the estimate and start the load in its own task: a caller who
        leaves does not abandon a half-loaded model."""
        entry: _Entry[T] = _Entry(
            name, LOADING, estimate, ready=asyncio.get_running_loop().create_future()
        )
        self._entries[name] = entry
        self.stats.misses += 1
        self._spawn(self._run_load(entry))
        return entry

    async def _run_load(self, entry: _Entry[T]) -> None:
        started = self.clock()
        try:
            loaded = await self._load(entry.name)
        except Exception as exc:
            self.stats.load_failures += 1
            self._drop(entry)
            self._settle(entry, exc)
            await self._notify()
            return
        self.stats.load_seconds.append(self.clock() - started)
        entry.model = loaded.model
        extra = loaded.size_bytes - entry.charged
        async with self._room:
            while extra > 0 and self.budget_bytes - self.charged_bytes < extra:
                victim = self._lru_idle()
                if victim is None:
                    break
                await self._evict(victim)
            fits = extra <= 0 or self.budget_bytes - self.charged_bytes >= extra
            if fits:
                entry.charged = loaded.size_bytes
                entry.state = READY
        if fits:
            self._settle(entry, None)
        else:
            # Measured bigger than charged and the rest is in use: refuse, unload.
            entry.state = UNLOADING
            await self._unload_quietly(entry.name, loaded.model)
            self._drop(entry)
            self._settle(
                entry,
                QueueFull(
                    f"model '{entry.name}' measured {loaded.size_bytes} bytes once loaded; "
                    f"with the models in use, this replica's budget of {self.budget_bytes} "
                    "bytes has no room for it"
                ),
            )
        await self._notify()

    # -- room ----------------------------------------------------------------------------

    async def _make_room(self, needed: int, name: str, deadline: float | None) -> None:
        """Evict idle models, least recently used first, until `needed` bytes are free;
        wait for requests to finish when everything left is in use."""
        async with self._room:
            while name not in self._entries and self.budget_bytes - self.charged_bytes < needed:
                victim = self._lru_idle()
                if victim is not None:
                    await self._evict(victim)
                else:
                    await self._wait(self._room.wait(), name, deadline)

    def _lru_idle(self) -> _Entry[T] | None:
        """The idle model to evict: lowest priority, least recently used among those."""
        idle = [e for e in self._entries.values() if _idle(e)]  # least recently used first
        return min(idle, key=lambda e: self._priority(e.name)) if idle else None

    async def _evict(self, entry: _Entry[T]) -> None:
        """Unload one idle model (the room lock is held); its bytes stay charged
        until the unload returns, and requests for it wait and then reload it."""
        entry.state = UNLOADING
        entry.ready = asyncio.get_running_loop().create_future()
        self.stats.evictions += 1
        if self.on_change is not None:
            self.on_change()
        assert entry.model is not None
        await self._unload_quietly(entry.name, entry.model)
        entry.model = None
        self._drop(entry)
        self._settle(entry, None)
        if self.on_change is not None:
            self.on_change()

    async def _unload_quietly(self, name: str, model: T) -> None:
        try:
            await self._unload(name, model)
        except Exception:
            log.exception("model '%s' failed to unload; forgetting it anyway", name)

    def _drop(self, entry: _Entry[T]) -> None:
        if self._entries.get(entry.name) is entry:
            del self._entries[entry.name]

    async def _notify(self) -> None:
        async with self._room:
            self._room.notify_all()
        if self.on_change is not None:
            self.on_change()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _settle(entry: _Entry[Any], error: BaseException | None) -> None:
        if entry.ready.done():
            return
        if error is None:
            entry.ready.set_result(None)  # waiters look again
        else:
            entry.ready.set_exception(error)  # every request that joined gets the error
            entry.ready.exception()  # marked retrieved: there may be no waiter left

    async def _wait(self, awaitable: Awaitable[Any], name: str, deadline: float | None) -> Any:
        if deadline is None:
            return await awaitable
        try:
            return await asyncio.wait_for(awaitable, max(0.0, deadline - self.clock()))
        except TimeoutError:
            raise DeadlineExceeded(
                f"model '{name}': the deadline passed while waiting for memory or its load"
            ) from None


def _idle(entry: _Entry[Any]) -> bool:
    return entry.state == READY and entry.pins == 0 and entry.waiters == 0
