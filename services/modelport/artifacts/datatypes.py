"""The one table of tensor element types: the protocol, config.pbtxt, numpy and torch.

torch-free on purpose: the SDK and the router use it without loading torch.
The torch column is the dtype's attribute name on the `torch` module
("float32"), which a torch backend turns into `getattr(torch, name)`, and which
`by_torch_name` maps back from `str(dtype)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelport.errors import InvalidInput


@dataclass(frozen=True)
class DataType:
    name: str  # OIP name as on the wire: "FP32"
    config: str  # config.pbtxt enum name: "TYPE_FP32"
    numpy: np.dtype | None  # little-endian, as on the wire; None for BYTES and BF16
    itemsize: int  # bytes per element in raw contents; 0 for BYTES
    contents_field: str | None  # InferTensorContents field for typed contents
    torch_name: str | None  # the torch dtype's attribute name; None for BYTES


def _dt(name: str, np_type: str | None, torch_name: str | None, size: int,
        field: str | None) -> DataType:  # fmt: skip
    return DataType(
        name=name,
        config="TYPE_STRING" if name == "BYTES" else f"TYPE_{name}",
        numpy=np.dtype(np_type) if np_type is not None else None,
        itemsize=size,
        contents_field=field,
        torch_name=torch_name,
    )


ALL: tuple[DataType, ...] = (
    _dt("BOOL", "?", "bool", 1, "bool_contents"),
    _dt("UINT8", "<u1", "uint8", 1, "uint_contents"),
    _dt("UINT16", "<u2", "uint16", 2, "uint_contents"),
    _dt("UINT32", "<u4", "uint32", 4, "uint_contents"),
    _dt("UINT64", "<u8", "uint64", 8, "uint64_contents"),
    _dt("INT8", "<i1", "int8", 1, "int_contents"),
    _dt("INT16", "<i2", "int16", 2, "int_contents"),
    _dt("INT32", "<i4", "int32", 4, "int_contents"),
    _dt("INT64", "<i8", "int64", 8, "int64_contents"),
    _dt("FP16", "<f2", "float16", 2, None),
    _dt("FP32", "<f4", "float32", 4, "fp32_contents"),
    _dt("FP64", "<f8", "float64", 8, "fp64_contents"),
    _dt("BF16", None, "bfloat16", 2, None),
    _dt("BYTES", None, None, 0, "bytes_contents"),
)

BY_NAME: dict[str, DataType] = {dt.name: dt for dt in ALL}
BY_CONFIG: dict[str, DataType] = {dt.config: dt for dt in ALL}
BY_TORCH_NAME: dict[str, DataType] = {dt.torch_name: dt for dt in ALL if dt.torch_name}
# OIP name -> numpy dtype, for the types numpy has (not BF16, not BYTES).
NUMPY_OF: dict[str, np.dtype] = {dt.name: dt.numpy for dt in ALL if dt.numpy is not None}
# OIP name -> typed `contents` field (FP16 and BF16 travel only as raw bytes).
CONTENTS_FIELD: dict[str, str] = {dt.name: dt.contents_field for dt in ALL if dt.contents_field}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def by_name(name: str, *, what: str = "tensor") -> DataType:
    try:
        return BY_NAME[name]
    except KeyError:
        known = ", ".join(BY_NAME)
        raise InvalidInput(f"{what}: unknown datatype '{name}' (expected one of {known})") from None


def by_torch_name(dtype: object) -> DataType:
    """The datatype of a torch dtype, given the dtype itself or its name ("float32")."""
    name = str(dtype).removeprefix("torch.")
    try:
        return BY_TORCH_NAME[name]
    except KeyError:
        raise InvalidInput(f"torch dtype {name} has no OIP datatype") from None
