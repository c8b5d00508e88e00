"""The sample decoder the project trains: it builds offline, once, and writes words."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from modelport.artifacts.generative import (
    is_generative,
    limits_from_config,
    read_config,
)
from modelport.inference.generative.engine import ContinuousBatchingEngine
from modelport.inference.generative.hf_loader import load_hf_model
from modelport.inference.generative.sample_decoder import build_sample_decoder, corpus_text
from modelport.inference.generative.types import SamplingParams

# The first test of a session to ask for `sample_dir` trains the sample decoder.
pytestmark = pytest.mark.timeout(420)


def test_sample_is_a_triton_version_with_a_generative_config(sample_dir: Path):
    config = read_config(sample_dir.parent / "config.pbtxt")
    assert is_generative(config) and config.name == "tiny-llama"
    assert limits_from_config(config).engine == "continuous"
    started = time.monotonic()
    assert (
        build_sample_decoder(sample_dir.parent.parent) == sample_dir
    )  # already built: no retraining
    assert time.monotonic() - started < 2


async def test_sample_continues_a_prompt_in_words_of_its_corpus(sample_dir: Path):
    loaded = load_hf_model(sample_dir)
    engine = ContinuousBatchingEngine(
        loaded.model, loaded.tokenizer, eos_token_ids=loaded.eos_token_ids
    )
    await engine.start()
    try:
        prompt = loaded.tokenizer.encode("The baker")
        text = "".join(
            [
                o.text
                async for o in engine.generate(
                    prompt, SamplingParams(temperature=0.0, max_tokens=30)
                )
            ]
        )
    finally:
        await engine.close()
    words = re.findall(r"[a-z]+", text.lower())
    known = set(re.findall(r"[a-z]+", corpus_text().lower()))
    assert len(words) >= 5, text
    assert sum(w in known for w in words) / len(words) >= 0.8, text
