"""Fine-tuning a small causal LM: validation loss falls and greedy output moves to the completion."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from modelport.artifacts import datasets as ds
from modelport.client.registry import RegistryClient
from modelport.inference.app import InferenceApp, InferenceSettings
from modelport.inference.generative.hf_loader import load_hf_model
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pbg
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
            client.pull("tiny-lm@canary", tmp_path / "repo" / "tiny-lm")
    finally:
        registry.stop()
    pulled = tmp_path / "repo" / "tiny-lm"
    loaded = load_hf_model(pulled / str(child.version), model_name="tiny-lm")
    assert (
        loaded.eos_token_ids
        and loaded.tokenizer.decode(loaded.tokenizer(PROMPT)["input_ids"]) == PROMPT
    )
    assert greedy(pulled, PROMPT) == after
    # The inference service serves it: its greedy completion has moved to the training one.
    served = asyncio.run(_served_completion(tmp_path / "repo"))
    assert _matching_prefix(served) > _matching_prefix(before) + 8, (before, served)


async def _served_completion(repo: Path) -> str:
    settings = InferenceSettings(model_repository=repo, host="127.0.0.1", grpc_port=0,
                                 metrics_port=-1, grace_seconds=1.0)  # fmt: skip
    app = InferenceApp(settings)
    await app.start()
    try:
        request = pb.ModelInferRequest(model_name="tiny-lm")
        sampling = json.dumps({"max_tokens": 16, "temperature": 0})
        for name, value in (("text_input", PROMPT), ("sampling_parameters", sampling)):
            request.inputs.add(name=name, datatype="BYTES", shape=[1])
            request.raw_input_contents.append(struct.pack("<I", len(value)) + value.encode())
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            answer = await pbg.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    finally:
        await app.stop(1.0)
    raw = answer.raw_output_contents[[o.name for o in answer.outputs].index("text_output")]
    text = raw[4:].decode()
    assert text.startswith(PROMPT), text  # unary: the prompt and the whole completion
    return text[len(PROMPT) :]


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
