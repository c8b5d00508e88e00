"""Accuracy metrics, and the drop between parent and child in the direction that hurts."""

from __future__ import annotations

import math

import numpy as np

from modelport.errors import InvalidInput

LOWER_IS_BETTER = {"max-abs-diff": True, "mse": True, "perplexity": True, "top1": False}


def tensor_metric(
    metric: str,
    outputs: list[np.ndarray],
    reference: list[np.ndarray],
    labels: np.ndarray | None,
) -> float:
    """`outputs`/`reference`: per output, samples on axis 0 (reference: expected or parent)."""
    if metric == "top1":
        if labels is None:  # the parent's choices are the labels
            labels = np.asarray(reference[0], dtype=np.float64).reshape(len(reference[0]), -1)
            labels = labels.argmax(axis=1)
        scores = np.asarray(outputs[0], dtype=np.float64).reshape(len(outputs[0]), -1)
        return float((scores.argmax(axis=1) == labels).mean())
    diffs = [
        np.asarray(o, dtype=np.float64) - np.asarray(r, dtype=np.float64).reshape(np.shape(o))
        for o, r in zip(outputs, reference, strict=True)
    ]
    if metric == "max-abs-diff":
        return float(max(np.abs(d).max() for d in diffs))
    if metric == "mse":
        return float(np.mean(np.concatenate([np.square(d).ravel() for d in diffs])))
    raise InvalidInput(
        f"metric '{metric}' does not apply to tensor models (max-abs-diff, mse, top1)"
    )


def drop(metric: str, parent: float, child: float) -> float:
    """How much worse the child is (positive: worse)."""
    return child - parent if LOWER_IS_BETTER[metric] else parent - child


def relative(drop_value: float, parent: float) -> float:
    if parent:
        return drop_value / abs(parent)
    return math.inf if drop_value > 0 else 0.0
