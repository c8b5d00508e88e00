"""Each derive method on a real exported model: the child's accuracy within the method's
bound, what the lineage records, and the refusals (with their reasons)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from modelport.artifacts.config import read_config
from modelport.compression.derive import derive_folder
from modelport.compression.evaluate import evaluate
from modelport.compression.spec import DeriveSpec, check_runnable_here
from modelport.errors import InvalidInput

from tests.compression.tiny_models import expected, inputs, npz_bytes

# (spec, max-abs-diff bound vs the parent's outputs on the data, lineage parameters)
METHODS = [
    (DeriveSpec(dtype="fp16"), 5e-3, {"compute_dtype": "fp16"}),
    (DeriveSpec(dtype="bf16"), 5e-2, {"compute_dtype": "bf16"}),
    (DeriveSpec(quantize="int8-dynamic"), 5e-2, {"quantized_layers": "3/3"}),
    (DeriveSpec(quantize="int8-weight-only"), 2e-2, {"quantized_layers": "3/3"}),
    (DeriveSpec(quantize="int4-weight-only"), 0.3, {"quantized_layers": "3/3"}),
]


@pytest.mark.parametrize(
    ("spec", "bound", "recorded"), METHODS, ids=lambda v: getattr(v, "method", lambda: "")()
)
def test_method_stays_within_its_bound(
    tiny_dir: Path, tmp_path: Path, spec: DeriveSpec, bound: float, recorded: dict[str, str]
) -> None:
    derived = derive_folder(tiny_dir, spec, tmp_path / "child")
    assert recorded.items() <= derived.parameters.items()
    config = read_config(derived.model_dir)
    assert config is not None and config.platform == "torch_export"
    assert [t.name for t in config.input] == ["INPUT"]  # the parent's contract, unchanged
    x = inputs()
    result = evaluate(tiny_dir, derived.model_dir, npz_bytes(INPUT=x), "npz")
    assert result.metric == "max-abs-diff"
    assert result.metrics["parent.accuracy"] == 0.0  # the parent is its own reference
    assert 0.0 < result.metrics["accuracy"] < bound
    assert result.metrics["accuracy_drop"] == result.metrics["accuracy"]
    for key in ("size_bytes", "latency_p50_ms", "throughput_per_s", "peak_memory_mb"):
        assert key in result.metrics and f"parent.{key}" in result.metrics


def test_pruning_records_the_sparsity_it_achieved(tiny_dir: Path, tmp_path: Path) -> None:
    derived = derive_folder(tiny_dir, DeriveSpec(prune=0.5), tmp_path / "child")
    assert derived.parameters["prune_pattern"] == "unstructured"
    assert abs(float(derived.parameters["achieved_sparsity"]) - 0.5) < 0.01
    x = inputs()
    labels = expected(x).argmax(axis=1)
    result = evaluate(tiny_dir, derived.model_dir, npz_bytes(INPUT=x, labels=labels), "npz")
    assert result.metric == "top1"
    assert result.metrics["parent.accuracy"] == 1.0
    assert 0.3 < result.metrics["accuracy"] < 1.0  # half the weights gone: it shows
    assert result.metrics["accuracy_drop"] == pytest.approx(1.0 - result.metrics["accuracy"])


def test_expected_outputs_are_the_reference_when_given(tiny_dir: Path, tmp_path: Path) -> None:
    derived = derive_folder(tiny_dir, DeriveSpec(dtype="fp16"), tmp_path / "child")
    x = inputs(16)
    shifted = expected(x) + 1.0  # a reference both models miss by 1
    result = evaluate(tiny_dir, derived.model_dir, npz_bytes(INPUT=x, OUTPUT=shifted), "npz", "mse")
    assert result.metrics["parent.accuracy"] == pytest.approx(1.0, abs=1e-4)
    assert abs(result.metrics["accuracy_drop"]) < 1e-2


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (DeriveSpec(quantize="fp8"), "fp8 needs a CUDA GPU of compute capability 8.9"),
        (DeriveSpec(prune=0.5, prune_pattern="2:4"), "2:4 sparsity needs a CUDA GPU"),
    ],
)
def test_gpu_only_methods_are_refused_on_this_cpu(spec: DeriveSpec, reason: str) -> None:
    assert spec.needs_gpu()
    with pytest.raises(InvalidInput, match=reason):
        check_runnable_here(spec, None)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (DeriveSpec(), "nothing to do"),
        (DeriveSpec(prune=1.5), "must be at least 0 and below 1"),
        (DeriveSpec(dtype="fp16", quantize="int8-dynamic"), "picks its own dtypes"),
        (DeriveSpec(quantize="int3"), "is not one of"),
        (DeriveSpec(prune=0.3, prune_pattern="2:4"), "zeroes exactly half"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: DeriveSpec, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        spec.check()


def test_torchscript_parents_are_refused_with_the_way_out(tmp_path: Path) -> None:
    from modelport.inference.samples import build_simple

    build_simple(tmp_path)
    with pytest.raises(InvalidInput, match=r"TorchScript.*torch\.export"):
        derive_folder(tmp_path / "simple", DeriveSpec(quantize="int8-dynamic"), tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_bad_evaluation_data_is_refused(tiny_dir: Path) -> None:
    with pytest.raises(InvalidInput, match=r"not a readable \.npz"):
        evaluate(tiny_dir, tiny_dir, b"not an npz", "npz")
    with pytest.raises(InvalidInput, match=r"no array for input\(s\) \['INPUT'\]"):
        evaluate(tiny_dir, tiny_dir, npz_bytes(other=np.zeros((2, 32), np.float32)), "npz")
    with pytest.raises(InvalidInput, match=r"shape \[2, 31\]"):
        evaluate(tiny_dir, tiny_dir, npz_bytes(INPUT=np.zeros((2, 31), np.float32)), "npz")


def test_lineage_method_names_follow_the_step_order() -> None:
    spec = DeriveSpec(prune=0.5, quantize="int8-weight-only", compile="aoti")
    assert spec.method() == "prune-unstructured+int8-weight-only+aoti"
