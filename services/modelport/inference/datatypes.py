"""One table for tensor element types across the protocol, config, numpy and torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from modelport.errors import InvalidInput


@dataclass(frozen=True)
class DataType:
    name: str  # OIP name as on the wire: "FP32"
    config: str  # config.pbtxt enum name: "TYPE_FP32"
    numpy: np.dtype | None  # None for BYTES and BF16 (no numpy dtype)
    torch: torch.dtype | None  # None for BYTES
    itemsize: int  # bytes per element in raw contents; 0 for BYTES
    contents_field: str | None  # InferTensorContents field for typed contents


def _dt(name: str, np_type: object, torch_type: object, size: int, field: str | None) -> DataType:
    return DataType(
        name=name,
        config="TYPE_STRING" if name == "BYTES" else f"TYPE_{name}",
        numpy=np.dtype(np_type) if np_type is not None else None,  # type: ignore[call-overload]
        torch=torch_type,  # type: ignore[arg-type]
        itemsize=size,
        contents_field=field,
    )


ALL: tuple[DataType, ...] = (
    _dt("BOOL", np.bool_, torch.bool, 1, "bool_contents"),
    _dt("UINT8", np.uint8, torch.uint8, 1, "uint_contents"),
    _dt("UINT16", np.uint16, torch.uint16, 2, "uint_contents"),
    _dt("UINT32", np.uint32, torch.uint32, 4, "uint_contents"),
    _dt("UINT64", np.uint64, torch.uint64, 8, "uint64_contents"),
    _dt("INT8", np.int8, torch.int8, 1, "int_contents"),
    _dt("INT16", np.int16, torch.int16, 2, "int_contents"),
    _dt("INT32", np.int32, torch.int32, 4, "int_contents"),
    _dt("INT64", np.int64, torch.int64, 8, "int64_contents"),
    _dt("FP16", np.float16, torch.float16, 2, None),
    _dt("FP32", np.float32, torch.float32, 4, "fp32_contents"),
    _dt("FP64", np.float64, torch.float64, 8, "fp64_contents"),
    _dt("BF16", None, torch.bfloat16, 2, None),
    _dt("BYTES", None, None, 0, "bytes_contents"),
)

BY_NAME: dict[str, DataType] = {dt.name: dt for dt in ALL}
BY_CONFIG: dict[str, DataType] = {dt.config: dt for dt in ALL}
BY_TORCH: dict[torch.dtype, DataType] = {dt.torch: dt for dt in ALL if dt.torch is not None}
BY_NUMPY: dict[np.dtype, DataType] = {dt.numpy: dt for dt in ALL if dt.numpy is not None}


def by_name(name: str, *, what: str = "tensor") -> DataType:
    try:
        return BY_NAME[name]
    except KeyError:
        known = ", ".join(BY_NAME)
        raise InvalidInput(f"{what}: unknown datatype '{name}' (expected one of {known})") from None


def by_torch(dtype: torch.dtype) -> DataType:
    try:
        return BY_TORCH[dtype]
    except KeyError:
        raise InvalidInput(f"torch dtype {dtype} has no OIP datatype") from None
