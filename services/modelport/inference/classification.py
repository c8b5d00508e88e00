"""The classification extension: an output answered as its top-k classes.

A request that sets `classification` (int64) on a requested output gets, instead
of the tensor, BYTES strings "value:index[:label]" for the k highest elements of
each batch row, highest first; the label comes from the output's
`label_filename` (one label a line, line i for index i). The shape becomes
[batch, k] ([k] for a model without a batch dimension), with k at most the
number of elements in a row. Values print as C's "%f" for floating types and as
integers otherwise, so the strings match Triton's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelport.errors import InvalidInput

# Larger rows are refused rather than sorted (Triton's limit).
MAX_ELEMENTS = 1_000_000
_SORTABLE = "iuf"  # numpy kinds Triton ranks; not BOOL, BYTES, FP16 or BF16 bits
PARAMETER = "classification"


def read_labels(path: Path) -> list[str]:
    """One label a line; a missing trailing newline and CRLF files are fine."""
    return path.read_text(encoding="utf-8").splitlines()


def check_count(output: str, value: object) -> int:
    """The k asked for on an output, validated as Triton does."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(
            f"invalid value type for 'classification' parameter of output '{output}', "
            "expected int64_param"
        )
    if value <= 0:
        raise InvalidInput(
            f"invalid value for 'classification' parameter of output '{output}', expected >= 0"
        )
    return value


def classify(
    array: np.ndarray,
    count: int,
    *,
    batched: bool,
    labels: Sequence[str] = (),
    datatype: str = "",
) -> np.ndarray:
    """Top-`count` classes of each row of `array` as "value:index[:label]" bytes."""
    type_name = datatype or array.dtype.name
    if array.dtype.kind not in _SORTABLE or array.dtype == np.float16 or datatype == "BF16":
        raise InvalidInput(
            f"class result not available for output due to unsupported type '{type_name}'"
        )
    rows = array.reshape(array.shape[0], -1) if batched and array.ndim else array.reshape(1, -1)
    elements = rows.shape[1]
    if elements > MAX_ELEMENTS:
        raise InvalidInput("classification output tensor too large")
    k = min(count, elements)
    floating = array.dtype.kind == "f"
    out = np.empty((rows.shape[0], k), dtype=np.object_)
    for r, row in enumerate(rows):
        for j, index in enumerate(_top(row, k)):
            value = row[index]
            text = f"{float(value):f}:{index}" if floating else f"{int(value)}:{index}"
            if index < len(labels) and labels[index]:
                text = f"{text}:{labels[index]}"
            out[r, j] = text.encode()
    return out if batched else out.reshape(k)


def _top(row: np.ndarray, k: int) -> list[int]:
    """Indices of the k highest values, highest first; equal values by lower index.

    A stable ascending sort of the reversed row, read backwards, orders equal
    values by ascending index (negating the row would overflow unsigned types).
    """
    n = row.shape[0]
    order = np.argsort(row[::-1], kind="stable")[::-1][:k]
    return [int(n - 1 - i) for i in order]
