"""The little tensor arithmetic the router does: ensemble mean, batch scatter and gather.

Only these two policies look inside tensors; every other request is forwarded
as bytes. The codec (`codec.py`) turns messages into `Tensor`s and back.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelport.errors import InvalidInput

FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str  # OIP name, e.g. "FP32"
    array: np.ndarray


def ensemble_mean(model: str, answers: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """Elementwise mean over the members' answers, output by output.

    Every member must return the same output names with equal shapes and a
    float type; the mean keeps that type.
    """
    if not answers:
        raise InvalidInput(f"model '{model}': ensemble has no members")
    first = answers[0]
    names = [t.name for t in first]
    result = []
    for index, name in enumerate(names):
        head = first[index]
        if head.datatype not in FLOAT_TYPES:
            raise InvalidInput(
                f"model '{model}': ensemble output '{name}' is {head.datatype}; "
                "the mean needs FP16, FP32 or FP64"
            )
        total = np.zeros(head.array.shape, dtype=np.float64)
        for member, answer in enumerate(answers):
            match = next((t for t in answer if t.name == name), None)
            if match is None:
                raise InvalidInput(
                    f"model '{model}': ensemble member {member} lacks output '{name}'"
                )
            if match.array.shape != head.array.shape or match.datatype != head.datatype:
                raise InvalidInput(
                    f"model '{model}': ensemble output '{name}' differs between members "
                    f"({head.datatype}{list(head.array.shape)} vs "
                    f"{match.datatype}{list(match.array.shape)})"
                )
            total += match.array
        result.append(Tensor(name, head.datatype, (total / len(answers)).astype(head.array.dtype)))
    return result


def batch_rows(model: str, inputs: Sequence[Tensor]) -> int:
    """The batch size (dim 0) shared by every input."""
    if not inputs:
        raise InvalidInput(f"model '{model}': scatter needs at least one input")
    sizes = {t.array.shape[0] if t.array.ndim else 0 for t in inputs}
    if len(sizes) != 1 or 0 in sizes:
        raise InvalidInput(
            f"model '{model}': scatter needs every input batched along dim 0 with one size; "
            f"got shapes {[list(t.array.shape) for t in inputs]}"
        )
    return sizes.pop()


def scatter(model: str, inputs: Sequence[Tensor], parts: int) -> list[list[Tensor]]:
    """Split every input along dim 0 into up to `parts` nearly equal, ordered slices."""
    rows = batch_rows(model, inputs)
    parts = max(1, min(parts, rows))
    bounds = np.linspace(0, rows, parts + 1).astype(int)
    return [
        [Tensor(t.name, t.datatype, t.array[start:stop]) for t in inputs]
        for start, stop in itertools.pairwise(bounds)
    ]


def gather(model: str, answers: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """Concatenate the slices' outputs along dim 0, in the order given."""
    first = answers[0]
    result = []
    for index, head in enumerate(first):
        pieces = []
        for answer in answers:
            match = answer[index] if index < len(answer) else None
            if match is None or match.name != head.name:
                raise InvalidInput(
                    f"model '{model}': scatter slices disagree on output '{head.name}'"
                )
            pieces.append(match.array)
        result.append(Tensor(head.name, head.datatype, np.concatenate(pieces, axis=0)))
    return result
