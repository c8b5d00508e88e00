"""numpy arrays to and from OIP v2 tensors, without torch.

Requests always travel as `raw_input_contents` (one little-endian buffer per
input): the cheapest encoding for both sides. Responses are read from
`raw_output_contents` when the server sent them, else from the typed
`contents` fields. BYTES elements are length-prefixed on the raw path (a 4-byte
little-endian length, then the bytes), as Triton does. numpy has no bfloat16:
BF16 arrays are sent from float32 (rounded to nearest even) or from uint16 bit
patterns, and come back as float32, which holds every bfloat16 exactly.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import numpy as np

from modelport.artifacts import datatypes
from modelport.artifacts.datatypes import CONTENTS_FIELD, NUMPY_OF
from modelport.proto.inference import grpc_service_pb2 as pb

DATATYPES = datatypes.NAMES
_DATATYPE_OF_KIND_SIZE = {(dt.kind, dt.itemsize): name for name, dt in NUMPY_OF.items()}


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype of a numpy array (object/str/bytes arrays are BYTES)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    name = _DATATYPE_OF_KIND_SIZE.get((array.dtype.kind, array.dtype.itemsize))
    if name is None:
        raise TypeError(f"numpy dtype {array.dtype} has no OIP datatype")
    return name


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview, np.bytes_)):
        return bytes(value)
    return str(value).encode()


def encode_bytes(array: np.ndarray) -> bytes:
    """BYTES tensor -> raw buffer: per element, a 4-byte little-endian length then the bytes."""
    parts: list[bytes] = []
    for element in array.reshape(-1):
        data = _as_bytes(element)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def decode_bytes(buffer: bytes, shape: Sequence[int]) -> np.ndarray:
    """Raw BYTES buffer -> object array of `bytes` with `shape`."""
    count = int(np.prod(shape, dtype=np.int64))
    out = np.empty(count, dtype=object)
    view = memoryview(buffer)
    offset = 0
    for index in range(count):
        if offset + 4 > len(view):
            raise ValueError(f"BYTES buffer ends after {index} of {count} elements")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise ValueError(f"BYTES element {index} claims {length} bytes past the buffer's end")
        out[index] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise ValueError(f"BYTES buffer has {len(view) - offset} bytes after {count} elements")
    return out.reshape(tuple(shape))


def float32_to_bf16_bits(array: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even; NaN stays NaN."""
    bits = np.ascontiguousarray(array, dtype="<f4").view("<u4")
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    rounded = ((bits + rounding) >> 16).astype("<u2")
    nan = np.isnan(array)
    if nan.any():
        rounded[nan] = np.uint16(0x7FC0)
    return rounded


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype("<u4") << 16).view("<f4")


def encode_array(array: np.ndarray, datatype: str) -> bytes:
    """One input's raw contents for `datatype`."""
    if datatype == "BYTES":
        return encode_bytes(np.asarray(array, dtype=object))
    if datatype == "BF16":
        if array.dtype == np.uint16:
            return np.ascontiguousarray(array, dtype="<u2").tobytes()
        return float32_to_bf16_bits(np.asarray(array, dtype=np.float32)).tobytes()
    dtype = NUMPY_OF.get(datatype)
    if dtype is None:
        raise ValueError(f"unknown datatype {datatype!r} (expected one of {', '.join(DATATYPES)})")
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def decode_raw(buffer: bytes, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """Raw contents -> numpy array (BF16 widens to float32, BYTES gives objects)."""
    if datatype == "BYTES":
        return decode_bytes(buffer, shape)
    if datatype == "BF16":
        return bf16_bits_to_float32(np.frombuffer(buffer, dtype="<u2")).reshape(tuple(shape))
    dtype = NUMPY_OF.get(datatype)
    if dtype is None:
        raise ValueError(f"unknown datatype {datatype!r} in response")
    count = int(np.prod(shape, dtype=np.int64))
    if len(buffer) != count * dtype.itemsize:
        raise ValueError(
            f"{datatype} tensor of shape {list(shape)} needs {count * dtype.itemsize} bytes,"
            f" got {len(buffer)}"
        )
    # frombuffer is read-only and shares the message's memory; copy so callers own it.
    return np.frombuffer(buffer, dtype=dtype).reshape(tuple(shape)).copy()


def build_request(
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    version: str = "",
    outputs: Sequence[str] | None = None,
    datatypes: Mapping[str, str] | None = None,
    request_id: str = "",
    parameters: Mapping[str, bool | int | float | str] | None = None,
) -> pb.ModelInferRequest:
    """A ModelInferRequest carrying `inputs` as raw contents.

    `datatypes` overrides the datatype read from an array's dtype (needed for BF16).
    """
    request = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    for name, value in inputs.items():
        array = np.asarray(value)
        datatype = (datatypes or {}).get(name) or datatype_of(array)
        tensor = request.inputs.add(name=name, datatype=datatype)
        tensor.shape.extend(array.shape)
        request.raw_input_contents.append(encode_array(array, datatype))
    for name in outputs or ():
        request.outputs.add(name=name)
    for key, param in (parameters or {}).items():
        set_parameter(request.parameters[key], param)
    return request


def set_parameter(target: pb.InferParameter, value: bool | int | float | str) -> None:
    # bool before int: bool is an int subclass.
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = str(value)


def _decode_typed(tensor: pb.ModelInferResponse.InferOutputTensor) -> np.ndarray:
    shape = tuple(tensor.shape)
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise ValueError(f"output {tensor.name!r}: {tensor.datatype} travels only as raw bytes")
    values = list(getattr(tensor.contents, field))
    if tensor.datatype == "BYTES":
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out.reshape(shape)
    return np.asarray(values, dtype=NUMPY_OF[tensor.datatype]).reshape(shape)


def decode_response(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Every output of a response as a numpy array, keyed by name."""
    raw = response.raw_output_contents
    if raw and len(raw) != len(response.outputs):
        raise ValueError(
            f"response has {len(response.outputs)} outputs but {len(raw)} raw contents"
        )
    result: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(response.outputs):
        if raw:
            result[tensor.name] = decode_raw(raw[index], tensor.datatype, tensor.shape)
        else:
            result[tensor.name] = _decode_typed(tensor)
    return result
