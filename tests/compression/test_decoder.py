"""Weight-only int8/int4 of a generative decoder: the child saved as safetensors loads
back quantized with the inference service's own transformers call, and its perplexity
stays within the method's bound; a child that does not load whole is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from modelport.compression.derive import Derived, derive_folder
from modelport.compression.evaluate import evaluate
from modelport.compression.spec import DeriveSpec
from modelport.errors import InvalidInput

from tests.compression.tiny_models import decoder_jsonl
from tests.generative.test_generative_serving import generation_request, text_of

# (method, bound on the relative perplexity increase, torchao tensor type of a Linear weight)
METHODS = [
    ("int8-weight-only", 0.01, "Int8Tensor"),
    ("int4-weight-only", 0.15, "IntxUnpackedToInt8Tensor"),
]


@pytest.fixture(scope="module")
def derived_children(decoder_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Each method's child, derived once for the module."""
    made: dict[str, Derived] = {}

    def child(method: str) -> Derived:
        if method not in made:
            out = tmp_path_factory.mktemp(method) / "child"
            made[method] = derive_folder(decoder_dir, DeriveSpec(quantize=method), out)
        return made[method]

    return child


def load_like_the_inference_service(version_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        version_dir, local_files_only=True, use_safetensors=True, trust_remote_code=False
    )


@pytest.mark.parametrize(("method", "bound", "weight_type"), METHODS, ids=[m[0] for m in METHODS])
def test_quantized_decoder_round_trips_within_its_bound(
    decoder_dir: Path, derived_children, method: str, bound: float, weight_type: str
) -> None:
    derived = derived_children(method)
    # 2 layers x 7 projections; the tied lm_head stays as it is.
    assert derived.parameters["quantized_layers"] == "14/15"
    assert derived.parameters["not_converted"] == "lm_head"
    model = load_like_the_inference_service(derived.model_dir / "1")
    projection = model.model.layers[1].mlp.down_proj
    assert type(projection.weight).__name__ == weight_type
    assert type(model.lm_head.weight).__name__ == "Parameter"

    result = evaluate(decoder_dir, derived.model_dir, decoder_jsonl(), "jsonl")
    assert result.metric == "perplexity"
    parent = result.metrics["parent.accuracy"]
    assert parent < 30  # trained on the text: far below the vocabulary size (~300)
    assert 0 < abs(result.metrics["relative_accuracy_drop"]) < bound  # changed, not by much
    assert result.metrics["size_bytes"] < result.metrics["parent.size_bytes"]
    assert result.metrics["throughput_per_s"] > 0 and result.metrics["latency_p50_ms"] > 0


async def test_the_registry_stores_and_the_inference_service_serves_the_child(
    derived_children, inference_server, stub_for, tmp_path: Path
) -> None:
    from modelport.artifacts import archive, archive_checks

    derived = derived_children("int8-weight-only")
    tar = tmp_path / "child.tar"
    archive.pack_directory(derived.model_dir, tar)
    prepared = archive_checks.prepare(
        tar, "decoder", tmp_path / "work", tmp_path / "out.tar", 1 << 28
    )
    assert prepared.signature.platform == "generative"  # what the registry stores

    repo = tmp_path / "repo"
    shutil.copytree(derived.model_dir, repo / "decoder")
    app = await inference_server(repo)
    stub = stub_for(app.address)
    greedy = {"max_tokens": 6, "temperature": 0, "ignore_eos": True}
    answer = await stub.ModelInfer(
        generation_request("the registry keeps", stream=False, model="decoder", **greedy),
        timeout=60,
    )
    # The engine's greedy answer is the child's own (transformers' generate on its weights).
    model = load_like_the_inference_service(derived.model_dir / "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(derived.model_dir / "1")
    ids = tokenizer("the registry keeps", return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    want = tokenizer.decode(out[0], skip_special_tokens=True)
    assert text_of(answer) == want


def test_a_child_missing_weights_is_refused(
    decoder_dir: Path, derived_children, tmp_path: Path
) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    derived = derived_children("int8-weight-only")
    broken = tmp_path / "broken"
    shutil.copytree(derived.model_dir, broken)
    weights = broken / "1" / "model.safetensors"
    with safe_open(weights, framework="pt") as f:
        metadata = f.metadata()
    layer = "model.layers.0.mlp.up_proj"  # its weight goes, as a wrong save would lose it
    tensors = {k: v for k, v in load_file(weights).items() if not k.startswith(f"{layer}.")}
    del metadata[f"{layer}.weight"]
    names = [n for n in json.loads(metadata["tensor_names"]) if n != f"{layer}.weight"]
    metadata["tensor_names"] = json.dumps(names)
    save_file(tensors, weights, metadata=metadata)
    with pytest.raises(InvalidInput, match="does not load whole"):
        evaluate(decoder_dir, broken, decoder_jsonl(), "jsonl")


@pytest.mark.parametrize(
    "spec",
    [DeriveSpec(prune=0.5), DeriveSpec(dtype="fp16"), DeriveSpec(quantize="int8-dynamic")],
    ids=lambda s: s.method(),
)
def test_decoders_take_weight_only_quantization_only(
    decoder_dir: Path, tmp_path: Path, spec: DeriveSpec
) -> None:
    with pytest.raises(InvalidInput, match="weight-only"):
        derive_folder(decoder_dir, spec, tmp_path / "child")
    assert not (tmp_path / "child").exists()
