"""Training datasets: the formats, their checks, and the train/validation split.

Shared by the registry (checks on upload), the training service (validation
before any compute) and the workers (reading examples), so all three agree
on what a dataset holds and which examples are held out.

- COMPLETION: JSONL, one `{"prompt": str, "completion": str}` per line.
- CHAT: JSONL, one `{"messages": [{"role", "content"}, ...]}` per line, the last
  message the assistant's (what is learned).
- TENSORS: `.npz` (no pickles) with `targets` and either `inputs` or one
  `inputs.NAME` array per model input, all with the same first dimension.

The split is chosen per example by the hash of its content, so a duplicate of
a training example never lands in validation, and any reader recomputes it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import InvalidInput

DEFAULT_VALIDATION_FRACTION = 0.1
MAX_EXAMPLE_CHARS = 64_000
ROLES = ("system", "user", "assistant")
# A rough, tokenizer-free count (words and punctuation) for upload-time limits;
# the training job counts real tokens with the base model's tokenizer.
_APPROX_TOKEN = re.compile(r"\w+|[^\w\s]")


class DatasetFormat(StrEnum):
    COMPLETION = "completion"
    CHAT = "chat"
    TENSORS = "tensors"


@dataclass(frozen=True)
class TextExample:
    """What a decoder learns: `completion` after `prompt` (chat: the last turn after the rest)."""

    prompt: str
    completion: str
    messages: tuple[dict[str, str], ...] = ()


@dataclass
class DatasetSummary:
    format: DatasetFormat
    examples: int
    validation: list[int]
    stats: dict[str, str] = field(default_factory=dict)

    @property
    def train_examples(self) -> int:
        return self.examples - len(self.validation)


def approx_tokens(text: str) -> int:
    return len(_APPROX_TOKEN.findall(text))


def sniff_format(path: Path) -> DatasetFormat:
    """TENSORS for a zip (npz), else the JSONL kind of its first record."""
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        return DatasetFormat.TENSORS
    for number, record in _json_lines(path):
        if "messages" in record:
            return DatasetFormat.CHAT
        if "prompt" in record or "completion" in record:
            return DatasetFormat.COMPLETION
        raise InvalidInput(
            f"dataset line {number}: expected 'prompt'/'completion' or 'messages', "
            f"got keys {sorted(record)}"
        )
    raise InvalidInput("dataset is empty: no JSONL records")


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as error:
                raise InvalidInput(f"dataset line {number}: not JSON ({error})") from None
            if not isinstance(record, dict):
                raise InvalidInput(f"dataset line {number}: expected a JSON object")
            yield number, record


def _text_example(number: int, record: dict[str, Any], fmt: DatasetFormat) -> TextExample:
    def bad(why: str) -> InvalidInput:
        return InvalidInput(f"dataset line {number}: {why}")

    if fmt is DatasetFormat.COMPLETION:
        prompt, completion = record.get("prompt"), record.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise bad("'prompt' and 'completion' must both be strings")
        if not completion.strip():
            raise bad("'completion' is empty: there is nothing to learn")
        example = TextExample(prompt, completion)
    else:
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad("'messages' must be a non-empty list")
        for index, message in enumerate(messages):
            if (
                not isinstance(message, dict)
                or message.get("role") not in ROLES
                or not isinstance(message.get("content"), str)
            ):
                raise bad(
                    f"messages[{index}] must be {{'role': one of {list(ROLES)}, 'content': str}}"
                )
        if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
            raise bad("the last message must be the assistant's, with content (what is learned)")
        turns = tuple({"role": m["role"], "content": m["content"]} for m in messages)
        prompt = "".join(f"{m['role']}: {m['content']}\n" for m in turns[:-1])
        example = TextExample(prompt, turns[-1]["content"], turns)
    if len(example.prompt) + len(example.completion) > MAX_EXAMPLE_CHARS:
        raise bad(f"example is longer than {MAX_EXAMPLE_CHARS} characters")
    return example


def read_text_examples(path: Path, fmt: DatasetFormat | None = None) -> list[TextExample]:
    fmt = fmt or sniff_format(path)
    if fmt is DatasetFormat.TENSORS:
        raise InvalidInput("dataset holds tensors (.npz), not text examples")
    examples = []
    for number, record in _json_lines(path):
        if (fmt is DatasetFormat.CHAT) != ("messages" in record):
            raise InvalidInput(f"dataset line {number}: mixes chat and prompt/completion records")
        examples.append(_text_example(number, record, fmt))
    return examples


def read_tensor_arrays(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(inputs by name — "" for a lone `inputs` —, targets); no pickled objects."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise InvalidInput(f"dataset is not a readable .npz without pickles ({error})") from None
    if "targets" not in arrays:
        raise InvalidInput(f"dataset .npz has no 'targets' array (has {sorted(arrays)})")
    targets = arrays.pop("targets")
    inputs = {
        ("" if key == "inputs" else key.removeprefix("inputs.")): value
        for key, value in arrays.items()
    }
    unknown = [key for key in arrays if key != "inputs" and not key.startswith("inputs.")]
    if unknown or not inputs:
        raise InvalidInput(
            "dataset .npz needs 'inputs' or 'inputs.NAME' arrays beside 'targets'"
            + (f" (unexpected {unknown})" if unknown else "")
        )
    rows = targets.shape[0] if targets.ndim else 0
    for name, value in inputs.items():
        label = name or "inputs"
        if value.dtype.kind not in "biuf":
            raise InvalidInput(f"dataset input '{label}' has dtype {value.dtype}: numeric only")
        if value.ndim == 0 or value.shape[0] != rows:
            found = value.shape[0] if value.ndim else 0
            raise InvalidInput(
                f"dataset input '{label}' has {found} rows, targets have {rows}: they must match"
            )
    if targets.dtype.kind not in "biuf":
        raise InvalidInput(f"dataset targets have dtype {targets.dtype}: numeric only")
    return inputs, targets


def _example_digests(path: Path, fmt: DatasetFormat) -> list[bytes]:
    if fmt is DatasetFormat.TENSORS:
        inputs, targets = read_tensor_arrays(path)
        rows = []
        for i in range(targets.shape[0]):
            h = hashlib.sha256(targets[i].tobytes())
            for name in sorted(inputs):
                h.update(inputs[name][i].tobytes())
            rows.append(h.digest())
        return rows
    return [
        hashlib.sha256(json.dumps([e.prompt, e.completion], ensure_ascii=False).encode()).digest()
        for e in read_text_examples(path, fmt)
    ]


def validation_indices(digests: list[bytes], fraction: float) -> list[int]:
    """Examples whose hash falls under `fraction`; at least one, never all."""
    if len(digests) < 2:
        raise InvalidInput(
            f"dataset has {len(digests)} example(s): at least 2 are needed (train and validation)"
        )
    scores = [int.from_bytes(d[:8], "big") / 2**64 for d in digests]
    chosen = [i for i, score in enumerate(scores) if score < fraction]
    if not chosen:
        chosen = [min(range(len(scores)), key=scores.__getitem__)]
    if len(chosen) == len(digests):
        chosen = chosen[:-1]
    return chosen


def summarize(path: Path, validation_fraction: float = 0.0) -> DatasetSummary:
    """Check a dataset file and count it; InvalidInput naming the line or array at fault."""
    fraction = validation_fraction or DEFAULT_VALIDATION_FRACTION
    if not 0.0 < fraction < 1.0:
        raise InvalidInput(f"validation fraction {fraction} must be between 0 and 1")
    fmt = sniff_format(path)
    stats: dict[str, str] = {}
    if fmt is DatasetFormat.TENSORS:
        inputs, targets = read_tensor_arrays(path)
        stats["targets_kind"] = "int" if targets.dtype.kind in "biu" else "float"
        stats["targets_shape"] = "x".join(str(d) for d in targets.shape)
        stats["inputs"] = ",".join(sorted(name or "inputs" for name in inputs))
    else:
        examples = read_text_examples(path, fmt)
        lengths = [len(e.prompt) + len(e.completion) for e in examples]
        stats["characters"] = str(sum(lengths))
        stats["approx_tokens"] = str(
            sum(approx_tokens(e.prompt + " " + e.completion) for e in examples)
        )
        stats["max_example_chars"] = str(max(lengths, default=0))
    digests = _example_digests(path, fmt)
    return DatasetSummary(fmt, len(digests), validation_indices(digests, fraction), stats)


def split(path: Path, validation_fraction: float) -> tuple[list[int], list[int]]:
    """(train indices, validation indices) as the registry counted them."""
    summary = summarize(path, validation_fraction)
    held_out = set(summary.validation)
    return [i for i in range(summary.examples) if i not in held_out], sorted(held_out)


def write_jsonl(records: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    for record in records:
        buffer.write(json.dumps(record, ensure_ascii=False) + "\n")
    return buffer.getvalue().encode()
