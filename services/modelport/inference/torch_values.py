"""Values between numpy and torch models: BYTES as (nested) lists of str, shapes checked.

PyTorch has no string tensors, so a TorchScript model takes and returns BYTES
as `List[str]`: flat (row-major) for a `List[str]` argument, nested one list
per dimension for `List[List[str]]` and deeper. Coming back, a flat list is
reshaped to the shape the config declares (batch rows known, at most one other
free dimension inferred); a nested list keeps its own shape. Text is UTF-8 both
ways, so bytes round-trip exactly; bytes that are not UTF-8 cannot become a
TorchScript str and are refused with a message saying so. Binary data (an
encoded image) goes to a `List[Tensor]` argument instead: one uint8 tensor per
element, flat; a model may answer BYTES that way too.

Every output is then checked against the config: dtype converted to the one
declared, shape matched against [batch, *dims] (-1 matches any size).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np

from modelport.errors import Internal, InvalidInput


def string_depth(type_name: str) -> int:
    """How deeply a TorchScript argument type nests str: List[List[str]] -> 2, else 0."""
    depth = 0
    while type_name.startswith("List[") and type_name.endswith("]"):
        type_name = type_name[5:-1]
        depth += 1
    return depth if type_name == "str" else 0


def takes_byte_tensors(type_name: str) -> bool:
    """A `List[Tensor]` argument takes each BYTES element as a uint8 tensor."""
    return type_name == "List[Tensor]"


def byte_tensors_in(array: np.ndarray) -> list[Any]:
    """A BYTES array as flat uint8 tensors, one per element (binary-safe)."""
    import torch

    return [torch.from_numpy(np.frombuffer(bytes(v), dtype=np.uint8)) for v in array.reshape(-1)]


def strings_in(array: np.ndarray, depth: int, model: str, name: str) -> list[Any]:
    """A BYTES array as the model takes it: flat for depth 1, nested for depth = ndim."""
    try:
        flat = [_text(v) for v in array.reshape(-1)]
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"model '{model}': input '{name}' holds bytes that are not UTF-8 ({exc.reason} "
            f"at byte {exc.start}); a TorchScript str takes text (send binary data as UINT8)"
        ) from None
    if depth <= 1:
        return flat
    if depth != array.ndim:
        raise InvalidInput(
            f"model '{model}': input '{name}' has {array.ndim} dims; the model takes "
            f"{depth}-deep nested lists of str"
        )
    nested: list[Any] = np.array(flat, dtype=object).reshape(array.shape).tolist()
    return nested


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def is_strings(value: object) -> bool:
    """A (possibly nested, possibly empty) list of str or bytes."""
    if isinstance(value, (str, bytes)):
        return True
    return isinstance(value, list) and all(is_strings(v) for v in value)


def byte_tensors_out(value: object) -> list[bytes] | None:
    """A returned list of uint8 tensors as bytes (None when it is something else)."""
    import torch

    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(v, torch.Tensor) and v.dtype == torch.uint8 for v in value):
        return None
    return [v.detach().cpu().contiguous().numpy().tobytes() for v in value]


def strings_out(value: list[Any], shape: Sequence[int], model: str, name: str) -> np.ndarray:
    """A returned list of str as a BYTES array of the declared shape (-1: inferred)."""
    nested = bool(value) and isinstance(value[0], list)
    if nested:
        try:
            array = np.array(_encode(value), dtype=object)
        except ValueError:
            raise Internal(f"model '{model}' output '{name}': nested lists are ragged") from None
        if array.dtype != object or any(isinstance(v, list) for v in array.reshape(-1)):
            raise Internal(f"model '{model}' output '{name}': nested lists are ragged")
        return array
    flat = np.empty(len(value), dtype=object)
    flat[:] = [v.encode() if isinstance(v, str) else v for v in value]
    return flat.reshape(_fill(shape, len(value), model, name))


def _encode(value: Any) -> Any:
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value.encode() if isinstance(value, str) else value


def _fill(shape: Sequence[int], count: int, model: str, name: str) -> tuple[int, ...]:
    free = [i for i, d in enumerate(shape) if d < 0]
    known = prod(d for d in shape if d >= 0)
    if not free:
        if known != count:
            raise Internal(
                f"model '{model}' output '{name}': {count} strings do not fill the "
                f"declared shape {list(shape)}"
            )
        return tuple(shape)
    if len(free) > 1 or known == 0 or count % known:
        raise Internal(
            f"model '{model}' output '{name}': cannot shape {count} strings as "
            f"{list(shape)}; return nested lists (List[List[str]]) for this shape"
        )
    filled = list(shape)
    filled[free[0]] = count // known
    return tuple(filled)


def check_shape(array: np.ndarray, expected: Sequence[int], model: str, name: str) -> None:
    """The model's output against the config's [batch, *dims]; a mismatch is a model error."""
    ok = array.ndim == len(expected) and all(
        e < 0 or e == s for e, s in zip(expected, array.shape, strict=True)
    )
    if not ok:
        raise Internal(
            f"model '{model}' output '{name}' has shape {list(array.shape)}; "
            f"its config declares {list(expected)}"
        )
