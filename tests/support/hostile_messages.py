"""Hypothesis strategies for hostile OIP v2 inference requests.

Two families: structurally valid `ModelInferRequest` messages whose contents
lie (shapes that disagree with the bytes, unknown models and versions, huge
and negative dims, BYTES tensors with broken length prefixes, raw and typed
contents mixed, odd parameters), and raw bytes that may not parse at all.
`valid_simple` and `valid_bytes` build requests the sample models answer, so a
fuzzed stream can mix good requests with bad ones and count the answers.

The models named here are the ones the hostile-input suite serves: `simple`
(INT32 [16] x2, max_batch_size 8), `reverse_bytes` (BYTES [1], max_batch_size
8) and `exclaim` (BYTES [3], max_batch_size 4).
"""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import strategies as st
from modelport.proto.inference import grpc_service_pb2 as pb

Tensor = pb.ModelInferRequest.InferInputTensor
Requested = pb.ModelInferRequest.InferRequestedOutputTensor

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
DATATYPES += ["FP16", "FP32", "FP64", "BF16", "BYTES", "", "INT33", "fp32", "STRING"]
SERVED = ["simple", "reverse_bytes", "exclaim"]
MODELS = SERVED * 4 + ["no_such_model", "", "simple/../x", "é" * 40]  # mostly served ones
VERSIONS = (
    [""] * 6 + ["1"] * 3 + ["2", "0", "-1", "production", "99999999999999999999", "1 ", "\x00"]
)
INPUT_NAMES = ["INPUT0", "INPUT1", "TEXT", "DATA", "X", "", "INPUT0 "]
OUTPUT_NAMES = ["OUTPUT0", "OUTPUT1", "TEXT_OUT", "REVERSED", "NOPE", ""]
PARAMETER_KEYS = ["binary_data_output", "sequence_id", "sequence_start", "sequence_end"]
PARAMETER_KEYS += ["priority", "timeout", "classification", "shared_memory_region"]
PARAMETER_KEYS += ["shared_memory_byte_size", "shared_memory_offset", "stream", "x", ""]

INT64_MAX = 2**63 - 1
dims = st.one_of(
    st.integers(0, 20),
    st.sampled_from([-1, -5, 2**31, 2**40, 2**62, INT64_MAX, -(2**63)]),
)
# Sometimes thousands of dims: an error message that echoes the shape must stay sendable.
many_dims = st.integers(6000, 9000).map(lambda n: [1] * n)
shapes = st.one_of(st.lists(dims, max_size=5), many_dims)


def _parameter(kind: str, value: object) -> pb.InferParameter:
    return pb.InferParameter(**{kind: value})  # type: ignore[arg-type]


parameter_values = st.one_of(
    st.booleans().map(lambda v: _parameter("bool_param", v)),
    st.integers(-(2**63), INT64_MAX).map(lambda v: _parameter("int64_param", v)),
    st.integers(0, 2**64 - 1).map(lambda v: _parameter("uint64_param", v)),
    st.text(max_size=20).map(lambda v: _parameter("string_param", v)),
    st.floats(allow_nan=True).map(lambda v: _parameter("double_param", v)),
    st.just(pb.InferParameter()),
)
parameters = st.dictionaries(st.sampled_from(PARAMETER_KEYS), parameter_values, max_size=3)


@st.composite
def length_prefixed(draw: st.DrawFn) -> bytes:
    """BYTES elements as 4-byte little-endian length + data, sometimes lying."""
    elements = draw(st.lists(st.binary(max_size=12), max_size=4))
    out = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    damage = draw(st.sampled_from(["none", "long", "truncated", "huge"]))
    if damage == "long":
        out += struct.pack("<I", 50) + b"abc"  # says 50 bytes, has 3
    elif damage == "truncated":
        out += b"\x01\x00"  # half a length prefix
    elif damage == "huge":
        out = struct.pack("<I", 2**32 - 1) + out
    return out


raw_contents = st.one_of(st.binary(max_size=160), length_prefixed())


@st.composite
def typed_contents(draw: st.DrawFn) -> pb.InferTensorContents:
    kind = draw(st.sampled_from(["int", "int64", "fp32", "bytes", "bool", "uint64", "fp64"]))
    count = draw(st.integers(0, 40))
    if kind == "int":
        return pb.InferTensorContents(int_contents=[draw(st.integers(-(2**31), 2**31 - 1))] * count)
    if kind == "int64":
        return pb.InferTensorContents(int64_contents=list(range(count)))
    if kind == "fp32":
        return pb.InferTensorContents(fp32_contents=[float(i) for i in range(count)])
    if kind == "bytes":
        return pb.InferTensorContents(bytes_contents=draw(st.lists(st.binary(max_size=8))))
    if kind == "bool":
        return pb.InferTensorContents(bool_contents=[True] * count)
    if kind == "uint64":
        return pb.InferTensorContents(uint64_contents=[2**64 - 1] * count)
    return pb.InferTensorContents(fp64_contents=[float("nan")] * count)


@st.composite
def tensors(draw: st.DrawFn) -> tuple[Tensor, bytes | None]:
    """One input tensor and, maybe, its raw bytes (None: not in raw_input_contents)."""
    tensor = Tensor(
        name=draw(st.sampled_from(INPUT_NAMES)),
        datatype=draw(st.sampled_from(DATATYPES)),
        shape=draw(shapes),
    )
    for key, value in draw(parameters).items():
        tensor.parameters[key].CopyFrom(value)
    mode = draw(st.sampled_from(["raw", "typed", "both", "none"]))
    if mode in ("typed", "both"):
        tensor.contents.CopyFrom(draw(typed_contents()))
    return tensor, draw(raw_contents) if mode in ("raw", "both") else None


@st.composite
def structured_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    """A well-formed message with arbitrary, mostly wrong, content."""
    request = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(MODELS)),
        model_version=draw(st.sampled_from(VERSIONS)),
        id=draw(st.text(max_size=10)),
    )
    for key, value in draw(parameters).items():
        request.parameters[key].CopyFrom(value)
    for tensor, raw in draw(st.lists(tensors(), max_size=4)):
        request.inputs.append(tensor)
        if raw is not None:
            request.raw_input_contents.append(raw)
    extra_raw = draw(st.integers(0, 2))  # raw_input_contents that no input owns
    request.raw_input_contents.extend(b"\x00" * 4 for _ in range(extra_raw))
    for name in draw(st.lists(st.sampled_from(OUTPUT_NAMES), max_size=3)):
        output = Requested(name=name)
        for key, value in draw(parameters).items():
            output.parameters[key].CopyFrom(value)
        request.outputs.append(output)
    return request


def valid_simple(rows: int = 1, request_id: str = "") -> pb.ModelInferRequest:
    a = np.arange(16 * rows, dtype=np.int32).reshape(rows, 16)
    request = pb.ModelInferRequest(model_name="simple", id=request_id)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.append(Tensor(name=name, datatype="INT32", shape=[rows, 16]))
        request.raw_input_contents.append(a.tobytes())
    return request


def valid_bytes(words: list[bytes], request_id: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="reverse_bytes", id=request_id)
    request.inputs.append(Tensor(name="DATA", datatype="BYTES", shape=[len(words), 1]))
    request.raw_input_contents.append(b"".join(struct.pack("<I", len(w)) + w for w in words))
    return request


valid_requests = st.one_of(
    st.integers(1, 8).map(valid_simple),
    st.lists(st.binary(min_size=1, max_size=6), min_size=1, max_size=8).map(valid_bytes),
)


@st.composite
def mutated(draw: st.DrawFn) -> pb.ModelInferRequest:
    """A valid request with one thing changed: closer to the paths that run a model."""
    request = draw(valid_requests)
    changes = ["shape", "many_dims", "datatype", "raw", "typed", "drop", "version", "outputs"]
    change = draw(st.sampled_from(changes))
    tensor = request.inputs[0]
    if change == "shape":
        tensor.shape[draw(st.integers(0, len(tensor.shape) - 1))] = draw(dims)
    elif change == "many_dims":
        tensor.shape[:] = draw(many_dims)
    elif change == "datatype":
        tensor.datatype = draw(st.sampled_from(DATATYPES))
    elif change == "raw":
        request.raw_input_contents[0] = draw(raw_contents)
    elif change == "typed":
        tensor.contents.CopyFrom(draw(typed_contents()))  # raw and typed both set
    elif change == "drop":
        del request.raw_input_contents[draw(st.integers(0, len(request.raw_input_contents) - 1))]
    elif change == "outputs":  # the model's own output names, maybe more than once
        names = ["OUTPUT0", "OUTPUT1"] if request.model_name == "simple" else ["REVERSED"]
        for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=4)):
            request.outputs.append(Requested(name=name))
    else:
        request.model_version = draw(st.sampled_from(VERSIONS))
    return request


hostile_requests = st.one_of(structured_requests(), mutated(), valid_requests)


@st.composite
def corrupted_bytes(draw: st.DrawFn) -> bytes:
    """A valid request's encoding truncated or with bytes overwritten."""
    data = bytearray(draw(valid_requests).SerializeToString())
    if draw(st.booleans()):
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


raw_messages = st.one_of(st.binary(max_size=300), corrupted_bytes())
