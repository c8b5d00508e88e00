"""The batcher's timing on a fake clock: deterministic, no sleeping (tier 1).

Max queue delay, full-batch dispatch, preferred sizes and deadlines are
checked by moving the clock by hand; the model is a Python function that
records the batch sizes it is called with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest
from modelport.artifacts.config import BatchingSpec
from modelport.errors import DeadlineExceeded, Internal
from modelport.inference.batcher import DynamicBatcher
from modelport.inference.stats import VersionStats

from tests.inference.fake_clock import FakeClock, settle

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

SIGNATURE = ((2,),)


class Model:
    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.batches.append(int(inputs[0].shape[0]))
        return [inputs[0] + 1]


def batcher(clock: FakeClock, model: Model, **batching: object) -> DynamicBatcher:
    spec = BatchingSpec(enabled=True, **batching)  # type: ignore[arg-type]
    made = DynamicBatcher("model 'm' version 1", model, max_batch_size=8, batching=spec,
                          instances=1, stats=VersionStats("m", 1), clock=clock)  # fmt: skip
    made.start()
    return made


def submit(
    b: DynamicBatcher, rows: int = 1, deadline: float | None = None
) -> asyncio.Future[list[np.ndarray]]:
    inputs = [np.zeros((rows, 2), np.float32)]
    return asyncio.ensure_future(b.submit(inputs, rows, SIGNATURE, deadline))


async def finished(*futures: asyncio.Future[list[np.ndarray]]) -> None:
    await asyncio.wait_for(asyncio.gather(*futures), 10)  # executions run in a thread


async def test_a_lone_request_waits_exactly_the_max_queue_delay() -> None:
    clock, model = FakeClock(), Model()
    b = batcher(clock, model, max_delay_s=0.100)
    request = submit(b)
    await settle()
    assert clock.waiting == 1  # the scheduler holds the batch open for more rows
    await clock.advance(0.099)
    assert not request.done() and model.batches == []
    await clock.advance(0.001)
    await finished(request)
    assert model.batches == [1]
    await b.close()


async def test_the_delay_counts_from_the_oldest_request() -> None:
    clock, model = FakeClock(), Model()
    b = batcher(clock, model, max_delay_s=0.100)
    first = submit(b)
    await settle()
    await clock.advance(0.060)
    second = submit(b)  # arrives 60 ms later: it does not restart the wait
    await clock.advance(0.040)
    await finished(first, second)
    assert model.batches == [2]
    await b.close()


async def test_a_full_batch_goes_at_once_without_waiting() -> None:
    clock, model = FakeClock(), Model()
    b = batcher(clock, model, max_delay_s=10.0)
    requests = [submit(b, rows=2) for _ in range(4)]  # 8 rows = max_batch_size
    await finished(*requests)  # the clock never moved
    assert model.batches == [8]
    await b.close()


async def test_reaching_the_largest_preferred_size_dispatches_without_waiting() -> None:
    clock, model = FakeClock(), Model()
    b = batcher(clock, model, max_delay_s=10.0, preferred_sizes=(2, 4))
    requests = [submit(b) for _ in range(4)]
    await finished(*requests)
    assert model.batches == [4]
    await b.close()


async def test_a_delayed_batch_is_cut_to_a_preferred_size() -> None:
    clock, model = FakeClock(), Model()
    b = batcher(clock, model, max_delay_s=0.050, preferred_sizes=(2, 4))
    requests = [submit(b) for _ in range(3)]  # 3 rows: not a preferred size
    await settle()
    assert model.batches == []
    await clock.advance(0.050)
    await asyncio.wait_for(asyncio.gather(*requests[:2]), 10)
    assert model.batches[0] == 2  # cut to 2; the third row goes in the next batch
    await clock.advance(0.050)
    await finished(*requests)
    assert model.batches == [2, 1]
    await b.close()


async def test_a_request_whose_deadline_passed_while_queued_is_never_run() -> None:
    clock, model = FakeClock(), Model()
    b = batcher(clock, model, max_delay_s=0.100)
    late = submit(b, deadline=clock.monotonic() + 0.050)
    on_time = submit(b)
    await settle()
    await clock.advance(0.100)
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(late, 10)
    await finished(on_time)
    assert model.batches == [1]
    await b.close()


class BrokenClock(FakeClock):
    """A wait that raises what the scheduler does not expect (as the wrong
    TimeoutError class did on Python 3.10)."""

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        raise RuntimeError("timer failed")


async def test_a_dead_scheduler_fails_waiting_requests_instead_of_hanging() -> None:
    model = Model()
    b = batcher(BrokenClock(), model, max_delay_s=0.100)
    request = submit(b)
    with pytest.raises(Internal, match="batch scheduler failed"):
        await asyncio.wait_for(request, 5)
    with pytest.raises(Internal, match="reload the model"):
        await submit(b)
    assert model.batches == []
    await asyncio.wait_for(b.close(), 5)
