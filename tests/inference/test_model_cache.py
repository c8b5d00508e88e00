"""The pool replica's memory-budget LRU model cache, without torch or network.

A fake backend counts bytes as a real one would hold them: allocated when a
load starts, freed when its unload ends; each yield to the event loop is a
moment where another request, load or eviction may run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelport.errors import DeadlineExceeded, InvalidInput, QueueFull
from modelport.inference.model_cache import Loaded, ModelCache

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


@dataclass
class FakeModel:
    name: str
    alive: bool = True


@dataclass
class FakeBackend:
    """Sizes per model; `load_yields`/`unload_yields` make loads and unloads take turns."""

    sizes: dict[str, int]
    budget: int
    measured: dict[str, int] = field(default_factory=dict)  # a size other than the estimate
    load_yields: int = 3
    unload_yields: int = 2
    fail: set[str] = field(default_factory=set)
    resident: int = 0
    peak: int = 0
    loads: dict[str, int] = field(default_factory=dict)
    unloads: dict[str, int] = field(default_factory=dict)
    loading: set[str] = field(default_factory=set)
    concurrent_load_of_one_model: bool = False

    async def load(self, name: str) -> Loaded[FakeModel]:
        if name in self.loading:
            self.concurrent_load_of_one_model = True
        self.loading.add(name)
        size = self.measured.get(name, self.sizes[name])
        self.resident += size
        self.peak = max(self.peak, self.resident)
        try:
            for _ in range(self.load_yields):
                await asyncio.sleep(0)
            if name in self.fail:
                self.resident -= size
                raise InvalidInput(f"model '{name}' failed to load")
        finally:
            self.loading.discard(name)
        self.loads[name] = self.loads.get(name, 0) + 1
        return Loaded(FakeModel(name), size)

    async def unload(self, name: str, model: FakeModel) -> None:
        for _ in range(self.unload_yields):
            await asyncio.sleep(0)
        model.alive = False
        self.resident -= self.measured.get(name, self.sizes[name])
        self.unloads[name] = self.unloads.get(name, 0) + 1

    def cache(self, **kwargs: object) -> ModelCache[FakeModel]:
        return ModelCache(
            self.budget, self.load, self.unload, estimate=lambda n: self.sizes[n], **kwargs
        )  # type: ignore[arg-type]


async def infer(cache: ModelCache[FakeModel], name: str, hold_yields: int = 2) -> str:
    async with cache.use(name) as model:
        for _ in range(hold_yields):
            assert model.alive, f"{name} unloaded while a request used it"
            await asyncio.sleep(0)
        assert model.alive
        return model.name


async def test_least_recently_used_idle_model_is_evicted_first() -> None:
    backend = FakeBackend({m: 10 for m in "abcde"}, budget=30)
    cache = backend.cache()
    for name in "abc":
        await infer(cache, name)
    await infer(cache, "a")  # a is now the most recently used
    await infer(cache, "d")  # evicts b
    assert list(cache.state()) == ["c", "a", "d"]
    await infer(cache, "e")  # evicts c
    assert list(cache.state()) == ["a", "d", "e"]
    assert (cache.stats.hits, cache.stats.misses, cache.stats.evictions) == (1, 5, 2)
    assert backend.resident == cache.charged_bytes == 30


async def test_lowest_priority_goes_first_then_least_recently_used() -> None:
    backend = FakeBackend({m: 10 for m in "abcde"}, budget=30)
    priorities = {"a": 1, "b": 0, "c": 1}
    cache = backend.cache(priority=lambda n: priorities.get(n, 0))
    for name in "abc":
        await infer(cache, name)
    await infer(cache, "d")  # b: the only priority 0, though a was used before it
    assert sorted(cache.state()) == ["a", "c", "d"]
    await infer(cache, "e")  # d (priority 0) before a and c
    assert sorted(cache.state()) == ["a", "c", "e"]


async def test_evict_waits_for_the_requests_using_the_model() -> None:
    backend = FakeBackend({"a": 10}, budget=30)
    cache = backend.cache()
    async with cache.use("a"):
        eviction = asyncio.create_task(cache.evict("a"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not eviction.done() and "a" in cache.state()
    await eviction
    assert "a" not in cache.state() and backend.resident == 0


async def test_a_pinned_model_is_never_evicted_the_load_waits_for_room() -> None:
    backend = FakeBackend({"a": 10, "b": 10}, budget=10)
    cache = backend.cache()
    entered, leave = asyncio.Event(), asyncio.Event()

    async def long_request() -> None:
        async with cache.use("a") as model:
            entered.set()
            await leave.wait()
            assert model.alive

    holder = asyncio.create_task(long_request())
    await entered.wait()
    waiter = asyncio.create_task(infer(cache, "b"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done() and backend.loads == {"a": 1}, "b waits: a is in use"
    leave.set()
    assert await waiter == "b"
    await holder
    assert backend.unloads == {"a": 1} and backend.peak == 10


async def test_concurrent_first_requests_share_one_load() -> None:
    backend = FakeBackend({"m": 5}, budget=10, load_yields=10)
    cache = backend.cache()
    names = await asyncio.gather(*(infer(cache, "m") for _ in range(20)))
    assert names == ["m"] * 20
    assert backend.loads == {"m": 1}
    assert (cache.stats.misses, cache.stats.joins) == (1, 19)


async def test_a_failed_load_fails_every_request_that_joined_it_then_retries() -> None:
    backend = FakeBackend({"m": 5}, budget=10, fail={"m"})
    cache = backend.cache()
    results = await asyncio.gather(*(infer(cache, "m") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, InvalidInput) for r in results)
    assert cache.stats.load_failures == 1 and cache.state() == {}
    backend.fail.clear()
    assert await infer(cache, "m") == "m"


async def test_too_big_models_are_refused_and_nothing_stays_charged() -> None:
    backend = FakeBackend({"huge": 50, "liar": 5, "a": 8}, budget=10, measured={"liar": 12})
    cache = backend.cache()
    with pytest.raises(QueueFull, match="more than this replica's memory budget of 10"):
        await infer(cache, "huge")
    with pytest.raises(QueueFull, match="measured 12 bytes once loaded"):
        await infer(cache, "liar")
    assert cache.state() == {} and backend.resident == 0
    # Measured a little bigger than estimated: idle models make room for it.
    backend.measured["liar"] = 7
    await infer(cache, "a")
    backend.sizes["a"] = 3
    assert await infer(cache, "liar") == "liar"
    assert list(cache.state()) == ["liar"] and cache.charged_bytes == 7


async def test_deadline_while_waiting_for_room() -> None:
    backend = FakeBackend({"a": 10, "b": 10}, budget=10)
    cache = backend.cache()
    async with cache.use("a"):
        with pytest.raises(DeadlineExceeded, match="model 'b': the deadline passed"):
            async with cache.use("b", deadline=time.monotonic() + 0.05):
                pass
    assert await infer(cache, "b") == "b"


async def test_a_caller_leaving_mid_load_does_not_abandon_the_model() -> None:
    backend = FakeBackend({"m": 5}, budget=10, load_yields=20)
    cache = backend.cache()
    task = asyncio.create_task(infer(cache, "m"))
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(30):
        await asyncio.sleep(0)
    assert cache.state() == {"m": ("READY", 5, 0)}
    assert await infer(cache, "m") == "m"
    assert backend.loads == {"m": 1}
    await cache.close()
    assert backend.resident == 0


requests = st.lists(
    st.tuples(st.integers(0, 11), st.integers(0, 6), st.integers(0, 5)),  # model, delay, hold
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 5), min_size=12, max_size=12),
    extra=st.integers(0, 8),
    load_yields=st.integers(0, 4),
    unload_yields=st.integers(0, 3),
    schedule=requests,
)
def test_property_concurrent_load_infer_evict(
    sizes: list[int], extra: int, load_yields: int, unload_yields: int, schedule: list
) -> None:
    """Many models, a small budget, requests interleaved in any order: every request
    succeeds with a live model, memory never exceeds the budget, one load at a time
    per model, and every load but the resident ones was followed by its eviction."""
    names = [f"m{i}" for i in range(12)]
    budget = max(sizes) + extra
    backend = FakeBackend(dict(zip(names, sizes, strict=True)), budget, load_yields=load_yields,
                          unload_yields=unload_yields)  # fmt: skip
    charged: list[int] = []

    async def scenario() -> None:
        cache = backend.cache(on_change=lambda: charged.append(cache.charged_bytes))

        async def one(model: int, delay: int, hold: int) -> str:
            for _ in range(delay):
                await asyncio.sleep(0)
            return await infer(cache, names[model], hold)

        answers = await asyncio.wait_for(asyncio.gather(*(one(*r) for r in schedule)), timeout=30)
        assert answers == [names[m] for m, _, _ in schedule]
        resident = {n for n, (state, _, _) in cache.state().items() if state == "READY"}
        for name in names:
            loads, unloads = backend.loads.get(name, 0), backend.unloads.get(name, 0)
            assert loads - unloads == (1 if name in resident else 0), name
        assert cache.stats.misses == sum(backend.loads.values())
        await cache.close()

    asyncio.run(scenario())
    assert not backend.concurrent_load_of_one_model
    assert backend.peak <= budget, f"resident bytes peaked at {backend.peak} > {budget}"
    assert max(charged, default=0) <= budget
    assert backend.resident == 0
