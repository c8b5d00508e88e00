"""The router's hold queue and demand signal, without network: a model at zero replicas."""

from __future__ import annotations

import asyncio
import time

import pytest
from modelport.errors import DeadlineExceeded, QueueFull, Unavailable
from modelport.router.demand import DemandTracker
from modelport.router.hold_queue import DOWNLOAD, LOAD, WARMUP, ColdStart, HoldQueue

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_held_requests_are_released_oldest_first_to_the_first_ready_replica() -> None:
    changes: list[tuple[str, int]] = []
    queue = HoldQueue(max_per_model=4, on_change=lambda m, n: changes.append((m, n)))
    order: list[int] = []

    async def caller(i: int) -> float:
        released = await queue.hold("mlp", time.monotonic() + 5)
        order.append(i)
        return released.waited

    tasks = [asyncio.create_task(caller(i)) for i in range(3)]
    await asyncio.sleep(0.05)
    assert queue.held("mlp") == 3
    assert queue.models() == ["mlp"]
    assert queue.release("mlp") == 3
    waits = await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert all(w >= 0.04 for w in waits)
    assert changes[:3] == [("mlp", 1), ("mlp", 2), ("mlp", 3)]
    assert changes[-1] == ("mlp", 0)
    assert queue.held("mlp") == 0


async def test_full_queue_is_resource_exhausted_at_once_and_other_models_unaffected() -> None:
    queue = HoldQueue(max_per_model=2)
    held = [asyncio.create_task(queue.hold("a", None)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull, match=r"model 'a' has no ready replica and 2 requests"):
        await queue.hold("a", None)
    other = asyncio.create_task(queue.hold("b", None))
    await asyncio.sleep(0)
    assert queue.held("b") == 1
    assert queue.overflows == 1
    queue.release("a")
    queue.release("b")
    await asyncio.gather(*held, other)


async def test_each_callers_deadline_is_honoured() -> None:
    queue = HoldQueue(max_per_model=8, max_hold_seconds=30)
    start = time.monotonic()
    short = asyncio.create_task(queue.hold("m", start + 0.1))
    long = asyncio.create_task(queue.hold("m", start + 5))
    with pytest.raises(DeadlineExceeded, match="the request's deadline"):
        await short
    assert 0.09 <= time.monotonic() - start < 1.0
    assert queue.held("m") == 1, "only the expired request left the queue"
    queue.release("m")
    assert (await long).waited >= 0.09
    assert queue.expired == 1


async def test_requests_without_deadline_are_held_at_most_max_hold() -> None:
    queue = HoldQueue(max_hold_seconds=0.05)
    with pytest.raises(DeadlineExceeded, match="--max-hold-seconds"):
        await queue.hold("m", None)


async def test_cancelled_caller_leaves_the_queue() -> None:
    queue = HoldQueue()
    task = asyncio.create_task(queue.hold("m", None))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert queue.held("m") == 0
    assert queue.cold_start("m") is None, "nobody waits: the next request starts a new one"


async def test_close_answers_held_requests_unavailable() -> None:
    queue = HoldQueue()
    task = asyncio.create_task(queue.hold("m", None))
    await asyncio.sleep(0)
    queue.close()
    with pytest.raises(Unavailable, match="shutting down"):
        await task
    with pytest.raises(Unavailable):
        await queue.hold("m", None)


async def test_cold_start_phases_go_to_the_first_released_request_only() -> None:
    clock = FakeClock()
    queue = HoldQueue(clock=clock)
    first = asyncio.create_task(queue.hold("m", None))
    await asyncio.sleep(0)
    second = asyncio.create_task(queue.hold("m", None))
    await asyncio.sleep(0)
    clock.now += 2.0  # waiting for a replica (pod scheduled, image pulled, process up)
    queue.observe("m", DOWNLOAD)
    clock.now += 0.5
    queue.observe("m", LOAD)
    clock.now += 1.25
    queue.observe("m", WARMUP)
    clock.now += 0.25
    queue.release("m")
    one, two = await asyncio.gather(first, second)
    assert one.cold_start is not None and two.cold_start is None
    assert one.cold_start.durations == pytest.approx(
        {"replica": 2.0, "download": 0.5, "load": 1.25, "warmup": 0.25}
    )
    assert one.cold_start.header() == (
        "replica=2.000,download=0.500,load=1.250,warmup=0.250,total=4.000"
    )


def test_cold_start_ignores_phases_going_backwards() -> None:
    clock = FakeClock()
    cold = ColdStart(started=clock(), clock=clock)
    clock.now += 1
    cold.observe(LOAD)
    clock.now += 1
    cold.observe(DOWNLOAD)  # a replica restarted its load: counted where we are
    clock.now += 1
    cold.finish()
    assert cold.durations == {"replica": 1.0, "load": 2.0}
    assert cold.header() == "replica=1.000,load=2.000,total=3.000"


async def test_demand_turns_active_at_once_and_idle_after_the_period() -> None:
    clock = FakeClock()
    demand = DemandTracker(idle_seconds=60, clock=clock)
    watch = demand.watch("m")
    assert watch.get_nowait() is False
    queue = HoldQueue(clock=clock, on_change=demand.set_held)
    task = asyncio.create_task(queue.hold("m", None))
    await asyncio.sleep(0)
    assert watch.get_nowait() is True, "a held request activates the model without polling"
    assert demand.pending("m") == 1
    queue.release("m")
    await task
    demand.started("m")
    assert demand.pending("m") == 1
    demand.finished("m")
    assert demand.pending("m") == 0
    clock.now += 59
    demand.tick()
    assert demand.is_active("m") and watch.empty()
    assert demand.next_idle_check() == pytest.approx(1.0)
    clock.now += 1
    demand.tick()
    assert watch.get_nowait() is False
    assert not demand.is_active("m")
    assert demand.next_idle_check() is None
    demand.unwatch("m", watch)
