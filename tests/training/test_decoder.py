"""Fine-tuning a small causal LM: validation loss falls and greedy output moves to the completion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from modelport.artifacts import datasets as ds
from modelport.training.jobs import Hyperparameters, Method, ModelKind
from modelport.training.worker import WorkerSpec, run

from tests.training.tiny_decoder import DATA, build_tiny_decoder, greedy

pytestmark = pytest.mark.timeout(240)

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
    )
    assert run(spec) == 0
    events = [json.loads(line) for line in (work / "worker-events.jsonl").read_text().splitlines()]
    return work / "output", [e["metrics"]["validation_loss"] for e in events if e["kind"] == "eval"]


def _matching_prefix(text: str) -> int:
    return next(
        (i for i, (a, b) in enumerate(zip(text, COMPLETION, strict=False)) if a != b),
        min(len(text), len(COMPLETION)),
    )


def test_full_finetune_lowers_validation_loss_and_learns_the_completion(tmp_path: Path) -> None:
    base = build_tiny_decoder(tmp_path / "base")
    output, losses = _finetune(tmp_path, base, Method.FULL, epochs=50, learning_rate=3e-3)
    assert losses[-1] < 0.8 * losses[0], losses
    before, after = greedy(base, PROMPT), greedy(output, PROMPT)
    assert _matching_prefix(after) > _matching_prefix(before) + 8, (before, after)
    # The export is the base's layout: config.pbtxt, safetensors, tokenizer, generation config.
    assert (output / "config.pbtxt").read_text() == (base / "config.pbtxt").read_text()
    names = {p.name for p in (output / "1").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names


def test_lora_merges_into_a_plain_model(tmp_path: Path) -> None:
    base = build_tiny_decoder(tmp_path / "base")
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
