"""Tensor decoding and encoding for every datatype, and the errors that name the input."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from modelport.artifacts.config import build_spec, parse_config_text
from modelport.errors import InvalidInput
from modelport.inference import codec, responses
from modelport.proto.inference import grpc_service_pb2 as pb

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

Tensor = pb.ModelInferRequest.InferInputTensor
TYPED = {
    "BOOL": (np.bool_, "bool_contents", [True, False]),
    "UINT8": (np.uint8, "uint_contents", [0, 255]),
    "UINT16": (np.uint16, "uint_contents", [0, 65535]),
    "UINT32": (np.uint32, "uint_contents", [0, 2**32 - 1]),
    "UINT64": (np.uint64, "uint64_contents", [0, 2**64 - 1]),
    "INT8": (np.int8, "int_contents", [-128, 127]),
    "INT16": (np.int16, "int_contents", [-32768, 32767]),
    "INT32": (np.int32, "int_contents", [-(2**31), 2**31 - 1]),
    "INT64": (np.int64, "int64_contents", [-(2**63), 2**63 - 1]),
    "FP32": (np.float32, "fp32_contents", [1.5, -2.25]),
    "FP64": (np.float64, "fp64_contents", [1e300, -1e-300]),
}


def spec_for(datatype: str, dims: str = "[ 2 ]", max_batch: int = 0):  # type: ignore[no-untyped-def]
    config_type = "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"
    text = f"""platform: "pytorch_libtorch" max_batch_size: {max_batch}
      input [ {{ name: "X" data_type: {config_type} dims: {dims} }} ]
      output [ {{ name: "Y" data_type: {config_type} dims: {dims} }} ]"""
    return build_spec("m", parse_config_text(text))


@pytest.mark.parametrize("datatype", sorted(TYPED))
def test_typed_and_raw_contents_decode_to_the_same_array(datatype: str) -> None:
    dtype, field, values = TYPED[datatype]
    spec = spec_for(datatype)
    typed = pb.ModelInferRequest(inputs=[Tensor(name="X", datatype=datatype, shape=[2])])
    getattr(typed.inputs[0].contents, field).extend(values)
    expected = np.array(values, dtype=dtype)
    raw = pb.ModelInferRequest(
        inputs=[Tensor(name="X", datatype=datatype, shape=[2])],
        raw_input_contents=[expected.tobytes()],
    )
    for request in (typed, raw):
        arrays, rows, _ = codec.decode_inputs(request, spec)
        np.testing.assert_array_equal(arrays[0], expected)
        assert arrays[0].dtype == dtype and rows == 1


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_half_types_travel_raw_only(datatype: str) -> None:
    spec = spec_for(datatype)
    bits = np.array([0x3C00, 0xC000], dtype=np.uint16)  # 1.0 and -2.0 in FP16
    arrays, _, _ = codec.decode_inputs(
        pb.ModelInferRequest(
            inputs=[Tensor(name="X", datatype=datatype, shape=[2])],
            raw_input_contents=[bits.tobytes()],
        ),
        spec,
    )
    assert arrays[0].tobytes() == bits.tobytes()
    typed = pb.ModelInferRequest(
        inputs=[
            Tensor(
                name="X",
                datatype=datatype,
                shape=[2],
                contents=pb.InferTensorContents(fp32_contents=[1.0, -2.0]),
            )
        ]
    )
    with pytest.raises(InvalidInput, match="must use raw_input_contents"):
        codec.decode_inputs(typed, spec)
    nothing = pb.ModelInferRequest(inputs=[Tensor(name="X", datatype=datatype, shape=[2])])
    with pytest.raises(InvalidInput, match="unable to find data for input tensor 'X'"):
        codec.decode_inputs(nothing, spec)


def test_bytes_raw_encoding_round_trips() -> None:
    spec = spec_for("BYTES")
    values = [b"hello", b""]
    raw = b"".join(struct.pack("<I", len(v)) + v for v in values)
    request = pb.ModelInferRequest(
        inputs=[Tensor(name="X", datatype="BYTES", shape=[2])], raw_input_contents=[raw]
    )
    arrays, _, _ = codec.decode_inputs(request, spec)
    assert list(arrays[0]) == values
    assert codec.encode_bytes(arrays[0]) == raw
    with pytest.raises(InvalidInput, match="BYTES element 1 overruns"):
        request.raw_input_contents[0] = raw[:-1] + struct.pack("<I", 9)
        codec.decode_inputs(request, spec)


def request_with(*tensors: tuple[str, str, list[int], bytes]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest()
    for name, datatype, shape, raw in tensors:
        request.inputs.append(Tensor(name=name, datatype=datatype, shape=shape))
        request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ((("Z", "FP32", [1, 4], bytes(16)),), "unknown input 'Z' (expected X)"),
        ((("X", "INT32", [1, 4], bytes(16)),), "input 'X' has datatype INT32, expected FP32"),
        ((("X", "FP32", [1, 5], bytes(20)),), "input 'X' has shape [1, 5], expected [-1, 4]"),
        ((("X", "FP32", [9, 4], bytes(144)),), "input 'X' has batch 9; max_batch_size is 8"),
        ((("X", "FP32", [1, 4], bytes(15)),), "has 15 raw bytes; shape [1, 4] of FP32 needs 16"),
        ((("X", "FP32", [1, 4], bytes(16)), ("X", "FP32", [1, 4], bytes(16))), "given twice"),
        ((), "missing input(s) X"),
    ],
)
def test_bad_inputs_are_named(tensors: tuple, message: str) -> None:  # type: ignore[type-arg]
    spec = spec_for("FP32", dims="[ 4 ]", max_batch=8)
    with pytest.raises(InvalidInput) as info:
        codec.decode_inputs(request_with(*tensors), spec)
    assert message in str(info.value)
    assert "model 'm'" in str(info.value)


def test_raw_count_must_match_inputs() -> None:
    spec = spec_for("FP32", dims="[ 4 ]", max_batch=8)
    request = request_with(("X", "FP32", [1, 4], bytes(16)))
    request.raw_input_contents.append(b"")
    with pytest.raises(InvalidInput, match="2 raw_input_contents, but only 1 input"):
        codec.decode_inputs(request, spec)


def test_typed_value_count_and_range_are_checked() -> None:
    spec = spec_for("UINT8")
    request = pb.ModelInferRequest(inputs=[Tensor(name="X", datatype="UINT8", shape=[2])])
    request.inputs[0].contents.uint_contents.extend([1])
    with pytest.raises(InvalidInput, match="has 1 values in contents; shape \\[2\\] needs 2"):
        codec.decode_inputs(request, spec)
    request.inputs[0].contents.uint_contents.append(300)
    with pytest.raises(InvalidInput, match="out of range for UINT8"):
        codec.decode_inputs(request, spec)


def test_response_carries_id_parameters_and_selected_outputs() -> None:
    text = """platform: "pytorch_libtorch" max_batch_size: 4
      input [ { name: "X" data_type: TYPE_FP32 dims: [ 2 ] } ]
      output [ { name: "A" data_type: TYPE_FP32 dims: [ 2 ] },
               { name: "B" data_type: TYPE_INT64 dims: [ 1 ] } ]"""
    spec = build_spec("m", parse_config_text(text))
    request = pb.ModelInferRequest(id="req-7", outputs=[{"name": "B"}])
    request.parameters["trace"].string_param = "on"
    selected = responses.requested_outputs(request, spec)
    outputs = [np.ones((1, 2), np.float32), np.array([[42]], np.int64)]
    response = responses.build_response(request, spec, 3, outputs, selected)
    assert response.id == "req-7" and response.model_version == "3"
    assert response.parameters["trace"].string_param == "on"
    assert [o.name for o in response.outputs] == ["B"]
    assert np.frombuffer(response.raw_output_contents[0], np.int64).tolist() == [42]
    with pytest.raises(InvalidInput, match="unknown output 'C'"):
        responses.requested_outputs(pb.ModelInferRequest(outputs=[{"name": "C"}]), spec)
