"""Converters between OIP messages and numpy arrays: the only place tensors are decoded.

Raw contents become read-only numpy views of the request bytes (no copy);
typed contents are converted once. Every mismatch raises InvalidInput naming
the model and the input at fault.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np

from modelport.artifacts.config import ModelSpec
from modelport.errors import InvalidInput
from modelport.proto.inference import grpc_service_pb2 as pb

Signature = tuple[tuple[int, ...], ...]


def decode_inputs(
    request: pb.ModelInferRequest, spec: ModelSpec
) -> tuple[list[np.ndarray], int, Signature]:
    """Inputs in config order, the batch rows, and the shape signature for batching."""
    fast = _decode_fixed_raw(request, spec)
    if fast is not None:
        return fast
    model = spec.name
    tensors = request.inputs
    raw = request.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise InvalidInput(
            f"model '{model}': {len(raw)} raw_input_contents for {len(tensors)} inputs"
        )
    arrays: list[Any] = [None] * len(spec.inputs)
    for position, tensor in enumerate(tensors):
        index = spec.input_index.get(tensor.name)
        if index is None:
            expected = ", ".join(spec.input_index)
            raise InvalidInput(
                f"model '{model}': unknown input '{tensor.name}' (expected {expected})"
            )
        if arrays[index] is not None:
            raise InvalidInput(f"model '{model}': input '{tensor.name}' is given twice")
        arrays[index] = _decode_one(model, spec, index, tensor, raw[position] if raw else None)
    missing = [t.name for t, a in zip(spec.inputs, arrays, strict=True) if a is None]
    if missing:
        raise InvalidInput(f"model '{model}': missing input(s) {', '.join(missing)}")
    if spec.max_batch_size == 0:
        return arrays, 1, ()
    rows = arrays[0].shape[0]
    for tensor_spec, array in zip(spec.inputs, arrays, strict=True):
        if array.shape[0] != rows:
            raise InvalidInput(
                f"model '{model}': input '{tensor_spec.name}' has batch {array.shape[0]}, "
                f"another input has batch {rows}"
            )
    return arrays, rows, tuple(a.shape[1:] for a in arrays)


def _decode_fixed_raw(
    request: pb.ModelInferRequest, spec: ModelSpec
) -> tuple[list[np.ndarray], int, Signature] | None:
    """The common case in a few comparisons: every input raw, in config order, of a
    fixed-shape numeric type, batched. None sends the request down the checked
    path below, which names whatever is wrong."""
    fixed = spec.fixed_inputs
    raw = request.raw_input_contents
    tensors = request.inputs
    if fixed is None or spec.max_batch_size == 0:
        return None
    if len(raw) != len(fixed) or len(tensors) != len(fixed):
        return None
    arrays = []
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
        if tensor.HasField("contents"):
            return None
        arrays.append(np.frombuffer(data, dtype=want.numpy).reshape(shape))
    return arrays, rows, tuple(want.dims for want in fixed)


def _decode_one(
    model: str, spec: ModelSpec, index: int, tensor: Any, raw: bytes | None
) -> np.ndarray:
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
        if tensor.HasField("contents"):
            raise InvalidInput(f"model '{model}': input '{name}' has both raw and typed contents")
        if datatype.name == "BYTES":
            return _decode_bytes(model, name, raw, count).reshape(shape)
        expected = count * datatype.itemsize
        if len(raw) != expected:
            raise InvalidInput(
                f"model '{model}': input '{name}' has {len(raw)} raw bytes; shape "
                f"{list(shape)} of {datatype.name} needs {expected}"
            )
        dtype = datatype.numpy if datatype.numpy is not None else np.dtype(np.uint16)  # BF16
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
        return np.array(list(values), dtype=np.object_).reshape(shape)
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


def requested_outputs(request: pb.ModelInferRequest, spec: ModelSpec) -> list[int] | None:
    """Indices of the outputs asked for, or None for all of them."""
    if not request.outputs:
        return None
    indices = []
    for wanted in request.outputs:
        index = spec.output_index.get(wanted.name)
        if index is None:
            known = ", ".join(spec.output_index)
            raise InvalidInput(
                f"model '{spec.name}': unknown output '{wanted.name}' (outputs: {known})"
            )
        indices.append(index)
    return indices


def build_response(
    request: pb.ModelInferRequest,
    spec: ModelSpec,
    version: int,
    outputs: Sequence[np.ndarray],
    selected: list[int] | None,
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=spec.name, model_version=str(version), id=request.id
    )
    if request.parameters:
        for key, value in request.parameters.items():
            response.parameters[key].CopyFrom(value)
    raw = response.raw_output_contents
    for index in selected if selected is not None else range(len(spec.outputs)):
        out_spec = spec.outputs[index]
        array = outputs[index]
        response.outputs.add(name=out_spec.name, datatype=out_spec.datatype.name, shape=array.shape)
        raw.append(encode_bytes(array) if array.dtype == np.object_ else array.tobytes())
    return response
