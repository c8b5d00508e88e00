"""Request inputs from OIP messages to numpy arrays: the only place tensors are decoded.

Raw contents become read-only numpy views of the request bytes (no copy);
typed contents are converted once; shared memory inputs are read out of their
region. Every mismatch raises InvalidInput naming the model and the input at
fault. (Answers are encoded in `responses`.)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np

from modelport.artifacts.config import ModelSpec
from modelport.errors import InvalidInput
from modelport.inference.shared_memory import SystemSharedMemory
from modelport.proto.inference import grpc_service_pb2 as pb

Signature = tuple[tuple[int, ...], ...]


def decode_inputs(
    request: pb.ModelInferRequest, spec: ModelSpec, shm: SystemSharedMemory | None = None
) -> tuple[list[np.ndarray | None], int, Signature]:
    """Inputs in config order (None: an optional input left out), the batch rows,
    and the shape signature for batching.

    Each input's data comes from a shared memory region (its parameters name
    one), from typed `contents`, or from the next `raw_input_contents` entry,
    in that order and as Triton reads them.
    """
    fast = _decode_fixed_raw(request, spec)
    if fast is not None:
        return fast
    model = spec.name
    raw = request.raw_input_contents
    raw_used = 0
    arrays: list[Any] = [None] * len(spec.inputs)
    for tensor in request.inputs:
        index = spec.input_index.get(tensor.name)
        if index is None:
            expected = ", ".join(spec.input_index)
            raise InvalidInput(
                f"model '{model}': unknown input '{tensor.name}' (expected {expected})"
            )
        if arrays[index] is not None:
            raise InvalidInput(f"model '{model}': input '{tensor.name}' is given twice")
        region = shared_memory_reference(tensor, "input")
        if region is not None:
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"unexpected 'content' provided when using shared memory for input "
                    f"tensor '{tensor.name}' for model '{model}'"
                )
            if shm is None:
                raise InvalidInput(f"model '{model}': shared memory is not offered here")
            data: Any = shm.read(*region)
        elif tensor.HasField("contents"):
            if raw:
                raise InvalidInput(
                    f"contents field must not be specified when using raw_input_contents "
                    f"for '{tensor.name}' for model '{model}'"
                )
            data = None
        elif raw_used < len(raw):
            data = raw[raw_used]
            raw_used += 1
        else:
            raise InvalidInput(
                f"unable to find data for input tensor '{tensor.name}' for model "
                f"'{model}' in request."
            )
        arrays[index] = _decode_one(model, spec, index, tensor, data)
    if raw_used < len(raw):
        raise InvalidInput(
            f"model '{model}': {len(raw)} raw_input_contents, but only {raw_used} "
            "input(s) take raw data"
        )
    missing = [t.name for t, a in zip(spec.inputs, arrays, strict=True)
               if a is None and not t.optional]  # fmt: skip
    if missing:
        raise InvalidInput(f"model '{model}': missing input(s) {', '.join(missing)}")
    rows, signature = _rows(spec, arrays)
    return arrays, rows, signature


def _rows(spec: ModelSpec, arrays: Sequence[np.ndarray | None]) -> tuple[int, Signature]:
    """Batch rows (all inputs agree) and the shapes past the batch dimension."""
    if spec.max_batch_size == 0:
        return 1, ()
    present = [(t, a) for t, a in zip(spec.inputs, arrays, strict=True) if a is not None]
    rows = present[0][1].shape[0] if present else 1
    for tensor_spec, array in present:
        if array.shape[0] != rows:
            raise InvalidInput(
                f"model '{spec.name}': input '{tensor_spec.name}' has batch {array.shape[0]}, "
                f"another input has batch {rows}"
            )
    signature = tuple(a.shape[1:] if a is not None else (-1,) for a in arrays)
    return rows, signature


def _decode_fixed_raw(
    request: pb.ModelInferRequest, spec: ModelSpec
) -> tuple[list[np.ndarray | None], int, Signature] | None:
    """The common case in a few comparisons: every input raw, in config order, of a
    fixed-shape numeric type, batched, without parameters (shared memory). None
    sends the request down the checked path, which names whatever is wrong."""
    fixed = spec.fixed_inputs
    raw = request.raw_input_contents
    tensors = request.inputs
    if fixed is None or spec.max_batch_size == 0:
        return None
    if len(raw) != len(fixed) or len(tensors) != len(fixed):
        return None
    arrays: list[np.ndarray | None] = []
    rows = 0
    for tensor, data, want in zip(tensors, raw, fixed, strict=True):
        shape = tuple(tensor.shape)
        if tensor.name != want.name or tensor.datatype != want.datatype or shape[1:] != want.dims:
            return None
        n = shape[0]
        if rows and n != rows:
            return None
        rows = n
        if not 1 <= n <= spec.max_batch_size or len(data) != n * want.row_bytes:
            return None
        if tensor.parameters or tensor.HasField("contents"):
            return None
        arrays.append(np.frombuffer(data, dtype=want.numpy).reshape(shape))
    return arrays, rows, tuple(want.dims for want in fixed)


def check_arrays(spec: ModelSpec, arrays: Sequence[np.ndarray | None]) -> tuple[int, Signature]:
    """Arrays handed over in process (an ensemble step) checked as a request's inputs are."""
    for tensor_spec, array in zip(spec.inputs, arrays, strict=True):
        name = tensor_spec.name
        if array is None:
            if not tensor_spec.optional:
                raise InvalidInput(f"model '{spec.name}': missing input {name}")
            continue
        datatype = tensor_spec.datatype
        wanted = np.dtype(np.object_) if datatype.name == "BYTES" else (
            datatype.numpy if datatype.numpy is not None else np.dtype(np.uint16)
        )  # fmt: skip
        if array.dtype != wanted:
            raise InvalidInput(
                f"model '{spec.name}': input '{name}' is {array.dtype}, expected {datatype.name}"
            )
        _check_shape(spec.name, spec, name, tensor_spec.dims, tuple(array.shape))
    return _rows(spec, arrays)


def shared_memory_reference(tensor: Any, role: str) -> tuple[str, int, int] | None:
    """(region, offset, byte size) when a tensor's parameters name a region."""
    params = tensor.parameters
    if "shared_memory_region" not in params:
        for key in ("shared_memory_offset", "shared_memory_byte_size"):
            if key in params:
                raise InvalidInput(
                    f"'{key}' can not be specified without 'shared_memory_region' parameter "
                    f"for tensor '{tensor.name}'"
                )
        return None
    region = params["shared_memory_region"]
    if region.WhichOneof("parameter_choice") != "string_param":
        raise InvalidInput(f"invalid value type for 'shared_memory_region' parameter for "
                           f"tensor '{tensor.name}', expected string_param.")  # fmt: skip
    values = []
    for key, required in (("shared_memory_offset", False), ("shared_memory_byte_size", True)):
        param = params.get(key)
        if param is None:
            if required:
                raise InvalidInput(
                    f"'shared_memory_byte_size' must be given with 'shared_memory_region' "
                    f"for {role} tensor '{tensor.name}'"
                )
            values.append(0)
            continue
        choice = param.WhichOneof("parameter_choice")
        if choice not in ("int64_param", "uint64_param"):
            raise InvalidInput(f"invalid value type for '{key}' parameter for tensor "
                               f"'{tensor.name}', expected int64_param.")  # fmt: skip
        values.append(int(getattr(param, choice)))
    return region.string_param, values[0], values[1]


def _decode_one(model: str, spec: ModelSpec, index: int, tensor: Any, raw: Any) -> np.ndarray:
    """One input from raw bytes (bytes or a uint8 array), or from typed contents when None."""
    tensor_spec = spec.inputs[index]
    name = tensor.name
    if tensor.datatype != tensor_spec.datatype.name:
        raise InvalidInput(
            f"model '{model}': input '{name}' has datatype {tensor.datatype or '(none)'}, "
            f"expected {tensor_spec.datatype.name}"
        )
    shape = tuple(tensor.shape)
    _check_shape(model, spec, tensor_spec.name, tensor_spec.dims, shape)
    count = prod(shape)
    datatype = tensor_spec.datatype
    if raw is not None:
        if datatype.name == "BYTES":
            data = raw.tobytes() if isinstance(raw, np.ndarray) else raw
            return _decode_bytes(model, name, data, count).reshape(shape)
        expected = count * datatype.itemsize
        if len(raw) != expected:
            raise InvalidInput(
                f"model '{model}': input '{name}' has {len(raw)} raw bytes; shape "
                f"{list(shape)} of {datatype.name} needs {expected}"
            )
        dtype = datatype.numpy if datatype.numpy is not None else np.dtype(np.uint16)  # BF16
        if isinstance(raw, np.ndarray):
            return raw.view(dtype).reshape(shape)
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    if datatype.contents_field is None:
        raise InvalidInput(
            f"model '{model}': input '{name}' of {datatype.name} must use raw_input_contents"
        )
    values = getattr(tensor.contents, datatype.contents_field)
    if len(values) != count:
        raise InvalidInput(
            f"model '{model}': input '{name}' has {len(values)} values in contents; "
            f"shape {list(shape)} needs {count}"
        )
    if datatype.name == "BYTES":
        out = np.empty(count, dtype=np.object_)
        out[:] = list(values)
        return out.reshape(shape)
    wanted = datatype.numpy
    assert wanted is not None  # only BYTES/FP16/BF16 lack one, handled above
    if wanted.kind in "iu" and wanted.itemsize < 8:
        # Narrow integers travel in 32-bit fields: check the range, never wrap.
        wide = np.array(values, dtype=np.int64)
        limits = np.iinfo(wanted)
        if wide.size and (wide.min() < limits.min or wide.max() > limits.max):
            raise InvalidInput(
                f"model '{model}': input '{name}' has values out of range for {datatype.name}"
            )
        return wide.astype(wanted).reshape(shape)
    return np.array(values, dtype=wanted).reshape(shape)


def _check_shape(
    model: str, spec: ModelSpec, name: str, dims: tuple[int, ...], shape: tuple[int, ...]
) -> None:
    if any(d < 0 for d in shape):
        raise InvalidInput(f"model '{model}': input '{name}' has negative dims {list(shape)}")
    if spec.max_batch_size > 0:
        expected = [-1, *dims]
        ok = len(shape) == len(expected) and all(
            e == -1 or e == s for e, s in zip(expected, shape, strict=True)
        )
        if ok and not 1 <= shape[0] <= spec.max_batch_size:
            raise InvalidInput(
                f"model '{model}': input '{name}' has batch {shape[0]}; "
                f"max_batch_size is {spec.max_batch_size}"
            )
    else:
        expected = list(dims)
        ok = len(shape) == len(dims) and all(
            e == -1 or e == s for e, s in zip(dims, shape, strict=True)
        )
    if not ok:
        raise InvalidInput(
            f"model '{model}': input '{name}' has shape {list(shape)}, expected {expected}"
        )


def _decode_bytes(model: str, name: str, raw: bytes, count: int) -> np.ndarray:
    """BYTES raw encoding: each element is a 4-byte little-endian length, then the bytes."""
    out = np.empty(count, dtype=np.object_)
    offset, size = 0, len(raw)
    for i in range(count):
        if offset + 4 > size:
            raise InvalidInput(f"model '{model}': input '{name}' BYTES data ends early")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > size:
            raise InvalidInput(f"model '{model}': input '{name}' BYTES element {i} overruns")
        out[i] = raw[offset : offset + length]
        offset += length
    if offset != size:
        raise InvalidInput(f"model '{model}': input '{name}' has {size - offset} extra bytes")
    return out


def encode_bytes(array: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for value in array.flat:
        data = value if isinstance(value, bytes) else str(value).encode()
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)
