"""The caller's evaluation data, read safely (numpy without pickles, JSON lines).

An `.npz` holds one array per model input (by input name; a model with one
input may call it `inputs`), and optionally the expected outputs (by output
name, or `expected` for a one-output model) or integer `labels`. Without
either, the parent's own outputs are the reference. A `.jsonl` holds one
`{"prompt": ..., "reference": ...}` object a line, for generative models.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from modelport.errors import InvalidInput

MAX_PROMPTS = 2000


@dataclass(frozen=True)
class TensorData:
    inputs: list[np.ndarray]  # in the config's input order, samples on axis 0
    expected: list[np.ndarray] = field(default_factory=list)  # in output order, or empty
    labels: np.ndarray | None = None

    @property
    def samples(self) -> int:
        return int(self.inputs[0].shape[0])

    def default_metric(self) -> str:
        return "top1" if self.labels is not None else "max-abs-diff"


@dataclass(frozen=True)
class TextData:
    prompts: list[str]
    references: list[str]

    @property
    def samples(self) -> int:
        return len(self.prompts)

    def default_metric(self) -> str:
        return "perplexity"


def read_npz(data: bytes, inputs: Sequence[object], outputs: Sequence[object]) -> TensorData:
    """`inputs`/`outputs`: the config's TensorSpecs (name, datatype, dims)."""
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
        arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInput(f"evaluation data is not a readable .npz: {exc}") from None
    in_names = [t.name for t in inputs]  # type: ignore[attr-defined]
    out_names = [t.name for t in outputs]  # type: ignore[attr-defined]
    if len(in_names) == 1 and in_names[0] not in arrays and "inputs" in arrays:
        arrays[in_names[0]] = arrays.pop("inputs")
    if len(out_names) == 1 and out_names[0] not in arrays and "expected" in arrays:
        arrays[out_names[0]] = arrays.pop("expected")
    missing = [n for n in in_names if n not in arrays]
    if missing:
        raise InvalidInput(
            f"evaluation data has no array for input(s) {missing} (it holds {sorted(arrays)})"
        )
    tensors = []
    for spec in inputs:
        array = arrays[spec.name]  # type: ignore[attr-defined]
        want = spec.datatype.numpy  # type: ignore[attr-defined]
        dims = tuple(spec.dims)  # type: ignore[attr-defined]
        if array.ndim != len(dims) + 1 or any(
            d != -1 and d != s for d, s in zip(dims, array.shape[1:], strict=True)
        ):
            raise InvalidInput(
                f"evaluation input '{spec.name}' has shape {list(array.shape)}; "  # type: ignore[attr-defined]
                f"expected [samples, {', '.join(map(str, dims))}]"
            )
        tensors.append(np.ascontiguousarray(array.astype(want) if want is not None else array))
    samples = {t.shape[0] for t in tensors}
    if len(samples) != 1 or 0 in samples:
        raise InvalidInput("evaluation inputs must hold the same, non-zero number of samples")
    expected = [np.asarray(arrays[n]) for n in out_names if n in arrays]
    if expected and len(expected) != len(out_names):
        raise InvalidInput(
            f"evaluation data gives expected values for some outputs, not all {out_names}"
        )
    labels = arrays.get("labels")
    if labels is not None:
        if labels.ndim != 1 or labels.shape[0] != tensors[0].shape[0]:
            raise InvalidInput("evaluation 'labels' must be one integer per sample")
        labels = labels.astype(np.int64)
    return TensorData(tensors, expected, labels)


def read_jsonl(data: bytes) -> TextData:
    prompts, references = [], []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            prompt, reference = item["prompt"], item["reference"]
        except (ValueError, KeyError, TypeError):
            raise InvalidInput(
                f'evaluation line {number}: expected {{"prompt": ..., "reference": ...}}'
            ) from None
        if not isinstance(prompt, str) or not isinstance(reference, str) or not reference:
            raise InvalidInput(f"evaluation line {number}: prompt and reference must be text")
        prompts.append(prompt)
        references.append(reference)
    if not prompts:
        raise InvalidInput("evaluation data holds no prompt")
    if len(prompts) > MAX_PROMPTS:
        raise InvalidInput(f"evaluation data holds {len(prompts)} prompts; at most {MAX_PROMPTS}")
    return TextData(prompts, references)
