"""Generative models (HF directories) pushed, versioned, aliased, pulled and verified by the real registry."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from modelport.client.channel import ModelportClientError
from modelport.client.registry import RegistryClient
from modelport.inference.generative.hf_loader import load_hf_model
from modelport.inference.generative.sample_decoder import write_random_decoder

from tests.registry.registry_servers import ThreadedRegistry

TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
)


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """repo/lm with config.pbtxt (backend generative) and version 1 in HF layout."""
    return write_random_decoder(tmp_path_factory.mktemp("lm") / "repo", "lm", **TINY).parent


def test_push_alias_and_pull_round_trip(
    lm_dir: Path, registry: ThreadedRegistry, tmp_path: Path
) -> None:
    with RegistryClient(registry.address) as client:
        version = client.push(lm_dir, name="lm", aliases=["production"])
        assert version.version == 1 and version.signature.platform == "generative"
        client.pull("lm@production", tmp_path / "lm")
    pulled = tmp_path / "lm" / "1"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (pulled / name).read_bytes() == (lm_dir / "1" / name).read_bytes()
    assert load_hf_model(pulled).model.config.num_hidden_layers == 1


def _broken(lm_dir: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "lm"
    shutil.copytree(lm_dir, copy)
    change(copy / "1")
    return copy


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CASES = {
    "truncated weights": (lambda d: _truncate(d / "model.safetensors"), "lies outside the file"),
    "pickled weights only": (
        lambda d: (
            (d / "model.safetensors").unlink(),
            (d / "pytorch_model.bin").write_bytes(b"\x80\x04x"),
        ),
        "never loaded",
    ),
    "no tokenizer": (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json"),
    "garbage weights": (
        lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 64),
        "not a safetensors",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_generative_versions_are_refused(
    case: str, lm_dir: Path, registry: ThreadedRegistry, tmp_path: Path
) -> None:
    change, reason = CASES[case]
    with RegistryClient(registry.address) as client:
        with pytest.raises(ModelportClientError, match=reason):
            client.push(_broken(lm_dir, tmp_path, change), name="lm")
        assert [m.name for m in client.list_models()] == []
