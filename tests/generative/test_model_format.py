"""The generative model format: config.pbtxt limits and the HF directory checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from modelport.artifacts.generative import (
    GenerativeLimits,
    check_hf_dir,
    config_pbtxt,
    is_generative,
    limits_from_config,
    read_config,
)
from modelport.errors import InvalidInput
from modelport.inference.generative.engine import EngineConfig
from modelport.inference.generative.hf_loader import load_hf_model


def test_config_pbtxt_round_trips_the_limits(tmp_path: Path):
    limits = GenerativeLimits(max_num_seqs=8, kv_cache_mb=64, max_model_len=300)
    path = tmp_path / "config.pbtxt"
    path.write_text(config_pbtxt("lm", limits))
    config = read_config(path)
    assert is_generative(config) and config.model_transaction_policy.decoupled
    assert limits_from_config(config) == limits
    assert {i.name for i in config.input} >= {
        "text_input",
        "input_ids",
        "sampling_parameters",
        "stream",
    }
    assert {o.name for o in config.output} >= {"text_output", "finish_reason", "num_output_tokens"}
    assert EngineConfig.from_limits(limits).kv_cache_bytes == 64 << 20


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("max_num_seqs", "0", "at least 1"),
        ("engine", "tgi", "one of"),
        ("block_size", "x", "int"),
        ("colour", "1", "unknown"),
    ],
)
def test_bad_limits_name_the_parameter(tmp_path: Path, key, value, match):
    text = (
        config_pbtxt("lm") + f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
    )
    path = tmp_path / "config.pbtxt"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=match):
        limits_from_config(read_config(path))


def test_hf_dir_loads_with_eos_and_chat_template(tiny_dir: Path):
    assert check_hf_dir(tiny_dir)[0].name == "model.safetensors"
    loaded = load_hf_model(tiny_dir)
    assert loaded.eos_token_ids == (loaded.tokenizer.eos_token_id,)
    assert "assistant" in loaded.chat_template


def test_pickled_weights_are_refused_with_a_hint(tiny_dir: Path, tmp_path: Path):
    copy = tmp_path / "1"
    shutil.copytree(tiny_dir, copy)
    (copy / "model.safetensors").unlink()
    (copy / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(InvalidInput, match="never loaded"):
        load_hf_model(copy)


def test_missing_tokenizer_is_refused(tiny_dir: Path, tmp_path: Path):
    copy = tmp_path / "1"
    shutil.copytree(tiny_dir, copy)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(InvalidInput, match=r"tokenizer\.json"):
        check_hf_dir(copy, "lm")
