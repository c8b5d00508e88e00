"""The conformance suite: what every GenerationEngine must do, run against each engine.

The engine under test comes from `engine_factory` (conftest.ENGINES); the
reference is transformers' own `generate` on the same weights, one prompt at a time.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
import torch
from modelport.errors import DeadlineExceeded, InvalidInput, QueueFull
from modelport.inference.generative.types import FinishReason, GenerationOutput, SamplingParams

GREEDY = SamplingParams(temperature=0.0)


async def collect(engine, prompt, params, **kwargs) -> list[GenerationOutput]:
    return [out async for out in engine.generate(prompt, params, **kwargs)]


def tokens_of(outputs: list[GenerationOutput]) -> list[int]:
    return [t for out in outputs for t in out.token_ids]


def mixed_prompts(n: int, seed: int = 0) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    return [
        ([rng.randrange(3, 512) for _ in range(rng.randint(2, 70))], rng.randint(1, 40))
        for _ in range(n)
    ]


def reference(model, prompt: list[int], max_new: int, eos: tuple[int, ...]) -> list[int]:
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=list(eos),
            pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()


async def test_greedy_matches_transformers_generate_for_16_concurrent_mixed_prompts(
    engine_factory, reference_model
):
    work = mixed_prompts(16)
    expected = [
        reference(reference_model.model, p, n, reference_model.eos_token_ids) for p, n in work
    ]
    engine = await engine_factory()
    results = await asyncio.gather(
        *(collect(engine, p, SamplingParams(temperature=0.0, max_tokens=n)) for p, n in work)
    )
    for i, outputs in enumerate(results):
        assert tokens_of(outputs) == expected[i], f"prompt {i} (length {len(work[i][0])})"
        assert outputs[-1].finished and all(not o.finished for o in outputs[:-1])
        want = FinishReason.LENGTH if len(expected[i]) == work[i][1] else FinishReason.STOP
        assert outputs[-1].finish_reason is want
    load = engine.load()
    assert (load.running, load.waiting, load.kv_used_blocks) == (0, 0, 0)


async def test_streams_one_delta_per_token_and_final_carries_usage_and_timings(engine_factory):
    engine = await engine_factory()
    outputs = await collect(
        engine, [5, 6, 7], SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    )
    assert [len(o.token_ids) for o in outputs] == [1] * 6
    assert [o.num_output_tokens for o in outputs] == [1, 2, 3, 4, 5, 6]
    final = outputs[-1]
    assert final.finish_reason is FinishReason.LENGTH
    assert final.num_prompt_tokens == 3 and final.timings is not None
    t = final.timings
    assert 0 <= t.queue_s <= t.ttft_s <= t.e2e_s and t.mean_itl_s > 0
    assert "".join(o.text for o in outputs) == engine.tokenizer.decode(
        tokens_of(outputs), skip_special_tokens=True
    )


async def test_seeded_sampling_is_reproducible_whatever_runs_beside_it(engine_factory):
    engine = await engine_factory()
    params = SamplingParams(
        temperature=0.9, top_k=50, top_p=0.9, seed=1234, max_tokens=12, ignore_eos=True
    )
    alone = tokens_of(await collect(engine, [10, 11, 12], params))
    crowd = await asyncio.gather(
        collect(engine, [10, 11, 12], params),
        *(
            collect(engine, p, SamplingParams(temperature=1.0, max_tokens=n))
            for p, n in mixed_prompts(6, seed=3)
        ),
    )
    assert tokens_of(crowd[0]) == alone
    other = tokens_of(
        await collect(engine, [10, 11, 12], SamplingParams(**{**vars(params), "seed": 99}))
    )
    assert other != alone


async def test_stop_token_ids_and_max_tokens(engine_factory, reference_model):
    engine = await engine_factory()
    expected = reference(reference_model.model, [9, 8, 7, 6], 10, ())
    stop_at = expected[4]
    first = expected.index(stop_at)
    outputs = await collect(
        engine,
        [9, 8, 7, 6],
        SamplingParams(temperature=0.0, max_tokens=10, stop_token_ids=(stop_at,), ignore_eos=True),
    )
    assert tokens_of(outputs) == expected[: first + 1]
    assert outputs[-1].finish_reason is FinishReason.STOP


async def test_stop_string_cuts_the_text_before_it(engine_factory):
    engine = await engine_factory()
    params = SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True)
    full = "".join(o.text for o in await collect(engine, [20, 21, 22], params))
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert len(stop) == 3
    outputs = await collect(
        engine, [20, 21, 22], SamplingParams(**{**vars(params), "stop": (stop,)})
    )
    text = "".join(o.text for o in outputs)
    assert text == full[: full.index(stop)]
    assert outputs[-1].finish_reason is FinishReason.STOP


async def test_logprobs_of_greedy_tokens_are_the_most_likely(engine_factory):
    engine = await engine_factory()
    outputs = await collect(
        engine,
        [3, 4, 5],
        SamplingParams(temperature=0.0, max_tokens=4, logprobs=3, ignore_eos=True),
    )
    for out in outputs:
        (lp,) = out.logprobs
        assert lp.token_id == out.token_ids[0] and len(lp.top) == 3
        assert lp.top[0][0] == lp.token_id and lp.logprob == pytest.approx(lp.top[0][1])
        assert lp.logprob <= 0


async def test_a_closed_stream_frees_its_slot_within_one_step(engine_factory):
    engine = await engine_factory()
    stream = engine.generate([1, 2, 3], SamplingParams(max_tokens=200, ignore_eos=True))
    await stream.__anext__()
    await stream.__anext__()
    assert engine.load().running == 1
    steps_at_close = engine.counters.steps
    await stream.aclose()
    deadline = time.monotonic() + 5
    while engine.load().kv_used_blocks and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    load = engine.load()
    assert (load.running, load.kv_used_blocks) == (0, 0)
    assert engine.counters.steps - steps_at_close <= 2  # the step in flight, at most one more
    assert engine.counters.finished.get("cancelled") == 1


async def test_a_cancelled_consumer_task_aborts_its_sequence(engine_factory):
    engine = await engine_factory()

    async def consume() -> None:
        async for _ in engine.generate([1, 2, 3], SamplingParams(max_tokens=500, ignore_eos=True)):
            pass

    task = asyncio.create_task(consume())
    while engine.counters.generated_tokens < 3:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 5
    while engine.load().running and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    assert engine.load().running == 0 and engine.load().kv_used_blocks == 0


async def test_full_waiting_queue_is_refused_with_queue_full(engine_factory):
    engine = await engine_factory(max_num_seqs=1, max_num_batched_tokens=24, max_waiting=2)
    long = SamplingParams(max_tokens=300, ignore_eos=True)
    tasks = [asyncio.create_task(collect(engine, [1, 2], long))]
    while engine.load().running < 1:
        await asyncio.sleep(0.001)
    tasks += [asyncio.create_task(collect(engine, [1, 2], long)) for _ in range(2)]
    while engine.load().waiting < 2:
        await asyncio.sleep(0.001)
    with pytest.raises(QueueFull, match="max_waiting 2"):
        await collect(engine, [4, 5], GREEDY)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    deadline = time.monotonic() + 5
    while (engine.load().running or engine.load().waiting) and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    assert (engine.load().running, engine.load().waiting) == (0, 0)


async def test_deadline_passed_raises_deadline_exceeded_and_frees_the_slot(engine_factory):
    engine = await engine_factory()
    with pytest.raises(DeadlineExceeded):
        await collect(
            engine,
            [1, 2],
            SamplingParams(max_tokens=10_000, ignore_eos=True),
            deadline=time.monotonic() + 0.05,
        )
    deadline = time.monotonic() + 5
    while engine.load().running and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    assert engine.load().running == 0


async def test_a_deadline_that_passes_while_the_callers_loop_is_blocked_still_raises(
    engine_factory,
):
    """On a loaded machine the caller's event loop can stall while the engine goes on, so
    outputs queue up behind its back: what the engine produced after the deadline is not
    delivered, and the stream ends in DeadlineExceeded rather than running to its length."""
    engine = await engine_factory()
    params = SamplingParams(max_tokens=10_000, ignore_eos=True)  # the context's 254 at most
    stream = engine.generate([1, 2], params, deadline=time.monotonic() + 0.05)
    blocked = False
    with pytest.raises(DeadlineExceeded):
        async for _ in stream:
            if not blocked:  # a blocking wait: no await, so the caller's loop runs nothing
                blocked, limit = True, time.monotonic() + 30
                while engine.load().running and time.monotonic() < limit:
                    time.sleep(0.01)
    assert blocked or engine.load().running == 0  # (the first token came after the deadline)
    assert engine.load().running == 0


@pytest.mark.parametrize(
    ("prompt", "match"),
    [([], "empty"), ([1] * 300, "context"), ([1, 100_000], "token ids"), ([-1], "token ids")],
)
async def test_bad_prompts_are_invalid_input(engine_factory, prompt, match):
    engine = await engine_factory()
    with pytest.raises(InvalidInput, match=match):
        await collect(engine, prompt, GREEDY)


async def test_generation_stops_at_the_context_length(engine_factory):
    engine = await engine_factory()
    prompt = [1] * (engine.max_model_len - 6)
    outputs = await collect(engine, prompt, SamplingParams(max_tokens=100, ignore_eos=True))
    assert len(tokens_of(outputs)) == 6
    assert outputs[-1].finish_reason is FinishReason.LENGTH
