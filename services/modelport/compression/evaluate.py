"""Parent and child measured on the same data and machine → the child's version metrics.

Keys (parent's values under `parent.`): `accuracy` (the metric's value),
`accuracy_drop` (how much worse the child is, in the metric's units),
`relative_accuracy_drop`, `size_bytes`, `peak_memory_mb`, `latency_p50_ms`
(batch 1), `throughput_per_s` (rows per second at the max batch; tokens per
second for decoders), `eval_samples`, `max_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelport.artifacts.config import build_spec, read_config
from modelport.compression import accuracy, decoder, evaldata
from modelport.compression.measure import measure_tensor_model
from modelport.compression.spec import METRICS
from modelport.errors import InvalidInput


@dataclass(frozen=True)
class Evaluation:
    metric: str
    metrics: dict[str, float]


def _config(model_dir: Path):  # type: ignore[no-untyped-def]
    config = read_config(model_dir)
    if config is None:
        raise InvalidInput(f"'{model_dir}' has no config.pbtxt")
    return config


def evaluate(
    parent_dir: Path, child_dir: Path, data: bytes, data_format: str, metric: str = ""
) -> Evaluation:
    if metric and metric not in METRICS:
        raise InvalidInput(f"metric '{metric}' is not one of {', '.join(METRICS)}")
    config = _config(parent_dir)
    if decoder.is_decoder(config):
        if data_format != "jsonl":
            raise InvalidInput("a generative model is evaluated on a .jsonl of prompts/references")
        if metric not in ("", "perplexity"):
            raise InvalidInput(
                f"metric '{metric}' does not apply to generative models (perplexity)"
            )
        text = evaldata.read_jsonl(data)
        parent, parent_value = decoder.measure_decoder(parent_dir, text)
        child, child_value = decoder.measure_decoder(child_dir, text)
        return _combine("perplexity", parent, child, parent_value, child_value, text.samples)
    if data_format != "npz":
        raise InvalidInput("a tensor model is evaluated on an .npz of inputs (see docs)")
    spec = build_spec(config.name or parent_dir.name, config)
    tensors = evaldata.read_npz(data, spec.inputs, spec.outputs)
    metric = metric or tensors.default_metric()
    if metric == "perplexity":
        raise InvalidInput("perplexity applies to generative models; use max-abs-diff, mse or top1")
    parent = measure_tensor_model(parent_dir, tensors)
    child = measure_tensor_model(child_dir, tensors)
    reference = tensors.expected or parent.outputs
    values = [
        accuracy.tensor_metric(metric, m.outputs, reference, tensors.labels)
        for m in (parent, child)
    ]
    return _combine(metric, parent, child, values[0], values[1], tensors.samples)


def _combine(metric, parent, child, parent_value, child_value, samples) -> Evaluation:  # type: ignore[no-untyped-def]
    drop = accuracy.drop(metric, parent_value, child_value)
    metrics = {
        "accuracy": child_value,
        "parent.accuracy": parent_value,
        "accuracy_drop": drop,
        "relative_accuracy_drop": accuracy.relative(drop, parent_value),
        "eval_samples": float(samples),
        "max_batch": float(child.max_batch),
        **child.metrics(),
        **parent.metrics("parent."),
    }
    return Evaluation(metric, metrics)
