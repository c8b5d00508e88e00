"""The dynamic batcher on its own: a Python function stands in for the model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from modelport.artifacts.config import BatchingSpec
from modelport.errors import DeadlineExceeded, QueueFull, Unavailable
from modelport.inference.batcher import DynamicBatcher
from modelport.inference.stats import VersionStats

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


class Recorder:
    """Doubles its input and remembers the batch sizes it saw."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.batches: list[int] = []
        self.delay = delay
        self.gate = gate

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self.gate is not None:
            self.gate.wait(5)
        if self.delay:
            time.sleep(self.delay)
        self.batches.append(int(inputs[0].shape[0]))
        return [inputs[0] * 2]


def make(run: Recorder, **batching: object) -> tuple[DynamicBatcher, VersionStats]:
    stats = VersionStats("m", 1)
    spec = BatchingSpec(enabled=True, **batching)  # type: ignore[arg-type]
    batcher = DynamicBatcher(
        "model 'm' version 1", run, max_batch_size=8, batching=spec, instances=1, stats=stats
    )
    batcher.start()
    return batcher, stats


def row(value: float, rows: int = 1) -> list[np.ndarray]:
    return [np.full((rows, 2), value, dtype=np.float32)]


async def test_concurrent_requests_share_executions_and_get_their_own_rows() -> None:
    batcher, stats = make(Recorder(delay=0.01), max_delay_s=0.005)
    results = await asyncio.gather(*(batcher.submit(row(i), 1, ((2,),), None) for i in range(20)))
    for i, outputs in enumerate(results):
        np.testing.assert_array_equal(outputs[0], np.full((1, 2), 2 * i, np.float32))
    assert stats.inference_count == 20
    assert stats.execution_count < 20
    assert max(stats.batches) <= 8
    await batcher.close()


async def test_multi_row_requests_are_kept_whole() -> None:
    run = Recorder()
    batcher, _ = make(run, max_delay_s=0.01)
    sizes = [3, 3, 3, 2]
    results = await asyncio.gather(
        *(batcher.submit(row(i, rows), rows, ((2,),), None) for i, rows in enumerate(sizes))
    )
    assert [r[0].shape[0] for r in results] == sizes
    assert all(size <= 8 for size in run.batches) and sum(run.batches) == 11
    await batcher.close()


async def test_preferred_size_cuts_the_batch() -> None:
    gate = threading.Event()
    run = Recorder(gate=gate)
    batcher, _ = make(run, preferred_sizes=(4,), max_delay_s=0.0)
    first = asyncio.ensure_future(batcher.submit(row(0), 1, ((2,),), None))
    await asyncio.sleep(0.05)  # the first execution holds the only executor
    rest = [asyncio.ensure_future(batcher.submit(row(i), 1, ((2,),), None)) for i in range(6)]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(first, *rest)
    assert run.batches[:2] == [1, 4]
    await batcher.close()


async def test_different_shapes_never_share_a_batch() -> None:
    run = Recorder(delay=0.005)
    batcher, _ = make(run, max_delay_s=0.01)
    a = [np.ones((1, 2), np.float32)]
    b = [np.ones((1, 3), np.float32)]
    results = await asyncio.gather(
        batcher.submit(a, 1, ((2,),), None),
        batcher.submit(b, 1, ((3,),), None),
        batcher.submit(a, 1, ((2,),), None),
    )
    assert [r[0].shape for r in results] == [(1, 2), (1, 3), (1, 2)]
    await batcher.close()


async def test_full_queue_is_refused_and_nothing_is_lost() -> None:
    gate = threading.Event()
    batcher, _ = make(Recorder(gate=gate), max_queue_size=2)
    running = asyncio.ensure_future(batcher.submit(row(0), 1, ((2,),), None))
    await asyncio.sleep(0.05)
    queued = [asyncio.ensure_future(batcher.submit(row(i), 1, ((2,),), None)) for i in (1, 2)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull, match="queue is full"):
        await batcher.submit(row(3), 1, ((2,),), None)
    gate.set()
    assert len(await asyncio.gather(running, *queued)) == 3
    await batcher.close()


async def test_expired_and_cancelled_requests_are_dropped_before_compute() -> None:
    gate = threading.Event()
    run = Recorder(gate=gate)
    batcher, _ = make(run)
    blocker = asyncio.ensure_future(batcher.submit(row(0), 1, ((2,),), None))
    await asyncio.sleep(0.05)
    expired = asyncio.ensure_future(batcher.submit(row(1), 1, ((2,),), time.monotonic() + 0.01))
    cancelled = asyncio.ensure_future(batcher.submit(row(2), 1, ((2,),), None))
    kept = asyncio.ensure_future(batcher.submit(row(3), 1, ((2,),), None))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    gate.set()
    await blocker
    with pytest.raises(DeadlineExceeded):
        await expired
    np.testing.assert_array_equal((await kept)[0], np.full((1, 2), 6, np.float32))
    assert sum(run.batches) == 2  # the blocker and `kept`: nothing else was computed
    await batcher.close()


async def test_close_finishes_queued_work_then_refuses() -> None:
    batcher, _ = make(Recorder(delay=0.02))
    pending = [asyncio.ensure_future(batcher.submit(row(i), 1, ((2,),), None)) for i in range(5)]
    await asyncio.sleep(0)
    await batcher.close()
    assert all(p.done() and not p.exception() for p in pending)
    with pytest.raises(Unavailable, match="unloading"):
        await batcher.submit(row(9), 1, ((2,),), None)


async def test_a_failing_model_fails_only_its_batch() -> None:
    calls = 0

    def flaky(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return [inputs[0]]

    stats = VersionStats("m", 1)
    batcher = DynamicBatcher(
        "model 'm' version 1", flaky, max_batch_size=8,
        batching=BatchingSpec(enabled=True), instances=1, stats=stats,
    )  # fmt: skip
    batcher.start()
    with pytest.raises(Exception, match="execution failed: boom"):
        await batcher.submit(row(1), 1, ((2,),), None)
    assert (await batcher.submit(row(2), 1, ((2,),), None))[0].shape == (1, 2)
    await batcher.close()
