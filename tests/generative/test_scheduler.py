"""The scheduler and the block allocator on their own: no model, just token counts."""

from __future__ import annotations

import pytest
from modelport.errors import InvalidInput, QueueFull
from modelport.inference.generative.kv_cache import BlockAllocator
from modelport.inference.generative.scheduler import Scheduler, SchedulerLimits, Sequence, Status
from modelport.inference.generative.types import FinishReason, SamplingParams


def seq(name: str, prompt_len: int) -> Sequence:
    return Sequence(name, list(range(1, prompt_len + 1)), SamplingParams(), arrival=0.0)


def run(scheduler: Scheduler, now: float = 0.0):
    """One step as the engine does it: compute what was scheduled, add a token to completed ones."""
    step = scheduler.schedule(now)
    for s in step.decode:
        s.num_computed += 1
        s.output_ids.append(7)
    for s, n in step.prefill:
        s.num_computed += n
        if s.num_computed == s.num_tokens:
            s.output_ids.append(7)
    return step


def test_allocator_is_all_or_nothing():
    blocks = BlockAllocator(4)
    assert blocks.allocate(5) is None and blocks.free_count == 4
    taken = blocks.allocate(3)
    assert taken is not None and len(set(taken)) == 3 and blocks.used_count == 3
    blocks.free(taken)
    assert blocks.free_count == 4


def test_long_prompt_is_prefilled_in_chunks_while_a_stream_keeps_decoding():
    s = Scheduler(
        SchedulerLimits(num_blocks=100, block_size=4, max_num_seqs=4, max_num_batched_tokens=16)
    )
    running = seq("running", 3)
    s.submit(running)
    run(s)
    s.submit(seq("long", 50))
    chunks = []
    for _ in range(4):
        step = run(s)
        assert step.decode == [running]  # the stream gets its token every step
        chunks.append(step.prefill[0][1])
    assert chunks == [15, 15, 15, 5]


def test_preemption_frees_the_latest_admitted_and_requeues_it_first():
    # 6 blocks of 4 tokens; two sequences of 10 tokens each take 3 blocks
    s = Scheduler(
        SchedulerLimits(num_blocks=6, block_size=4, max_num_seqs=4, max_num_batched_tokens=64)
    )
    a, b = seq("a", 10), seq("b", 10)
    s.submit(a)
    s.submit(b)
    run(s)
    assert s.allocator.free_count == 0 and a.num_tokens == 11
    run(s)
    run(s)  # positions 10 and 11 still fit in 3 blocks
    assert b.status is Status.RUNNING
    run(s)  # position 12 needs a 4th block each: b, admitted last, is preempted
    assert a.status is Status.RUNNING and b.status is Status.WAITING
    assert list(s.waiting) == [b] and b.blocks == [] and b.num_computed == 0 and b.preemptions == 1
    s.finish(a, FinishReason.STOP)
    step = run(s)
    assert step.prefill == [(b, 13)]  # recomputed from its prompt and the token it had


def test_waiting_queue_bound_counts_what_no_free_slot_will_take():
    limits = SchedulerLimits(num_blocks=10, max_num_seqs=1, max_waiting=2, max_num_batched_tokens=8)
    s = Scheduler(limits)
    for name in "abc":  # a takes the free slot at the next step; b and c queue
        s.submit(seq(name, 2))
    with pytest.raises(QueueFull, match="2 sequences are waiting"):
        s.submit(seq("d", 2))
    run(s)  # a runs, b and c still queue: still full
    with pytest.raises(QueueFull):
        s.submit(seq("d", 2))
    s.finish(s.running[0], FinishReason.STOP)  # a slot frees: one more fits
    s.submit(seq("d", 2))


def test_abort_and_deadline_drop_sequences_and_free_their_blocks():
    s = Scheduler(SchedulerLimits(num_blocks=10, block_size=4, max_num_batched_tokens=64))
    a, b = seq("a", 5), seq("b", 5)
    b.deadline = 1.0
    s.submit(a)
    s.submit(b)
    run(s)
    s.abort("a")
    step = run(s, now=2.0)
    assert step.dropped == [a, b] and step.empty
    assert a.finish_reason is FinishReason.CANCELLED and s.allocator.used_count == 0


def test_prompts_that_cannot_fit_the_context_are_refused():
    s = Scheduler(SchedulerLimits(num_blocks=10, max_model_len=32))
    with pytest.raises(InvalidInput, match="context"):
        s.submit(seq("x", 32))
    with pytest.raises(InvalidInput, match="empty"):
        s.submit(seq("x", 0))
