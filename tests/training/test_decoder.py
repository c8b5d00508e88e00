"""Fine-tuning a small causal LM: validation loss falls and greedy output moves to the completion."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from modelport.artifacts import datasets as ds
from modelport.client.registry import RegistryClient
from modelport.inference.generative.hf_loader import load_hf_model
from modelport.training.jobs import Hyperparameters, Method, ModelKind
from modelport.training.worker import WorkerSpec, run

from tests.registry.registry_servers import ThreadedRegistry, registry_settings
from tests.training.tiny_decoder import DATA, build_tiny_decoder, greedy

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("torch_threads")]

PROMPT = "Q: How do I reset my password?\nA:"
COMPLETION = " Open settings, choose security, then reset password."


def _finetune(
    tmp_path: Path, base: Path, method: Method, **params: float
) -> tuple[Path, list[float]]:
    data = DATA / "support.jsonl"
    summary = ds.summarize(data, 0.2)
    resolved = Hyperparameters(batch_size=4, **params).resolve(  # type: ignore[arg-type]
        ModelKind.DECODER, method, summary.train_examples, 1
    )
    work = tmp_path / method.value
    work.mkdir()
    spec = WorkerSpec(
        job_id="t",
        kind="decoder",
        method=method.value,
        hyperparameters=resolved.to_json(),
        seed=1,
        validation_fraction=0.2,
        work_dir=str(work),
        base_model_dir=str(base),
        dataset_path=str(data),
        threads=1,
    )
    assert run(spec) == 0
    events = [json.loads(line) for line in (work / "worker-events.jsonl").read_text().splitlines()]
    return work / "output", [e["metrics"]["validation_loss"] for e in events if e["kind"] == "eval"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The sample decoder, built once for both methods (a tokenizer is trained for it)."""
    yield build_tiny_decoder(tmp_path_factory.mktemp("decoder") / "base")


def _matching_prefix(text: str) -> int:
    return next(
        (i for i, (a, b) in enumerate(zip(text, COMPLETION, strict=False)) if a != b),
        min(len(text), len(COMPLETION)),
    )


def test_full_finetune_lowers_validation_loss_and_learns_the_completion(
    tmp_path: Path, base: Path
) -> None:
    output, losses = _finetune(tmp_path, base, Method.FULL, epochs=40, learning_rate=1e-2)
    assert losses[-1] < 0.8 * losses[0], losses
    before, after = greedy(base, PROMPT), greedy(output, PROMPT)
    assert _matching_prefix(after) > _matching_prefix(before) + 8, (before, after)
    # The export is the base's layout: config.pbtxt, safetensors, tokenizer, generation config.
    assert (output / "config.pbtxt").read_text() == (base / "config.pbtxt").read_text()
    names = {p.name for p in (output / "1").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    # The registry takes it as a generative version (its upload checks), as the child of the
    # base, and the generative engine's loader reads what comes back out.
    registry = ThreadedRegistry(registry_settings(tmp_path / "registry"))
    try:
        with RegistryClient(registry.address) as client:
            client.push(base, name="tiny-lm", aliases=["production"])
            child = client.push(output, name="tiny-lm", parent="tiny-lm@production",
                                aliases=["canary"], create_model=False)  # fmt: skip
            assert child.signature.platform == "generative" and child.parent == "tiny-lm:1"
            client.pull("tiny-lm@canary", tmp_path / "pulled")
    finally:
        registry.stop()
    loaded = load_hf_model(tmp_path / "pulled" / str(child.version), model_name="tiny-lm")
    assert (
        loaded.eos_token_ids
        and loaded.tokenizer.decode(loaded.tokenizer(PROMPT)["input_ids"]) == PROMPT
    )
    assert greedy(tmp_path / "pulled", PROMPT) == after


def test_lora_merges_into_a_plain_model(tmp_path: Path, base: Path) -> None:
    output, losses = _finetune(tmp_path, base, Method.LORA, epochs=4, learning_rate=1e-2)
    assert losses[-1] < losses[0]
    names = {p.name for p in (output / "1").iterdir()}
    assert "adapter_config.json" not in names and "model.safetensors" in names
    from safetensors.torch import load_file

    tuned = load_file(output / "1" / "model.safetensors")
    original = load_file(base / "1" / "model.safetensors")
    assert tuned.keys() == original.keys()  # merged: no lora_A / lora_B left
    changed = [k for k in tuned if not (tuned[k] == original[k]).all()]
    assert any("q_proj" in k for k in changed) and not any("embed" in k for k in changed)
