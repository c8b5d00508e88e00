"""Sampling parameters, the sampler against transformers' own processors, the detokenizer."""

from __future__ import annotations

import pytest
import torch
from modelport.errors import InvalidInput
from modelport.inference.generative import sampler
from modelport.inference.generative.detokenizer import IncrementalDetokenizer
from modelport.inference.generative.sample_decoder import corpus_text, train_tokenizer
from modelport.inference.generative.types import SamplingParams
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(corpus_text(), 512)


def test_sampling_parameters_from_json_like_vllm():
    p = SamplingParams.from_mapping(
        {"temperature": 0, "max_tokens": 5, "stop": "x", "seed": 3, "n": 1}
    )
    assert p.greedy and p.stop == ("x",) and p.seed == 3


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"max_tokens": "many"}, "max_tokens"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"stop": [1]}, "stop"),
        ({"logprobs": 50}, "logprobs"),
        ({"beams": 2}, "unknown"),
    ],
)
def test_bad_sampling_parameters_name_the_key(values, match):
    with pytest.raises(InvalidInput, match=match):
        SamplingParams.from_mapping(values)


def test_filters_and_penalty_match_transformers_processors():
    torch.manual_seed(0)
    logits = torch.randn(1, 100)
    history = [3, 5, 5, 9]
    ours = logits[0].clone()
    sampler.apply_repetition_penalty(ours, history, 1.3)
    theirs = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([history]), logits.clone())[0]
    assert torch.equal(ours, theirs)
    for k, p in [(10, 1.0), (0, 0.8), (20, 0.5)]:
        ours = sampler.filter_top_k_top_p(logits[0], k, p)
        theirs = logits.clone()
        if k:
            theirs = TopKLogitsWarper(k)(None, theirs)
        if p < 1:
            theirs = TopPLogitsWarper(p)(None, theirs)
        assert torch.equal(torch.isinf(ours), torch.isinf(theirs[0])), (k, p)


def test_seeded_draws_repeat_and_greedy_rows_take_the_argmax():
    logits = torch.randn(3, 50)
    params = SamplingParams(temperature=1.0, seed=7)
    rows = lambda: [  # noqa: E731
        sampler.SamplerRow(SamplingParams(temperature=0.0), None, ()),
        sampler.SamplerRow(params, sampler.new_generator(7), ()),
        sampler.SamplerRow(params, sampler.new_generator(7), ()),
    ]
    first, second = sampler.sample(logits, rows()), sampler.sample(logits, rows())
    assert first == second and first[0] == int(logits[0].argmax())


def test_incremental_text_equals_decoding_everything(tokenizer):
    text = "The baker starts work at four in the morning — café, naïve, 東京."
    ids = tokenizer.encode(text)
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.add(t) for t in ids] + [detok.flush()]
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert "" in pieces  # a multi-byte character waited for its last token


def test_stop_string_across_deltas_is_held_back_then_cut(tokenizer):
    ids = tokenizer.encode("The river is wide and slow. In the evening")
    detok = IncrementalDetokenizer(tokenizer, stop=("slow.",))
    shown = ""
    for t in ids:
        shown += detok.add(t)
        assert "slo" not in shown or detok.stopped
        if detok.stopped:
            break
    assert detok.stopped and shown + detok.flush() == "The river is wide and "


def test_text_that_only_starts_like_a_stop_string_is_released(tokenizer):
    detok = IncrementalDetokenizer(tokenizer, stop=("wide!",))
    ids = tokenizer.encode("wide and slow")
    shown = "".join(detok.add(t) for t in ids) + detok.flush()
    assert shown == "wide and slow" and not detok.stopped
