"""BYTES everywhere and outputs checked against the config, over real gRPC (tier 2)."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from modelport.inference.codec import encode_bytes
from modelport.proto.inference import grpc_service_pb2 as pb

from tests.inference.requests import Tensor

MODELS = ["simple_string", "simple_identity", "nested_upper", "exclaim", "reverse_bytes",
          "echo_length"]  # fmt: skip


def decode(response: pb.ModelInferResponse, name: str) -> np.ndarray:
    index = [o.name for o in response.outputs].index(name)
    tensor = response.outputs[index]
    raw = response.raw_output_contents[index]
    values, pos = [], 0
    while pos < len(raw):
        size = int.from_bytes(raw[pos : pos + 4], "little")
        values.append(raw[pos + 4 : pos + 4 + size])
        pos += 4 + size
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(tuple(tensor.shape))


def bytes_request(
    model: str, name: str, array: np.ndarray, typed: bool = False
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="r1")
    tensor = Tensor(name=name, datatype="BYTES", shape=array.shape)
    if typed:
        tensor.contents.bytes_contents.extend(array.reshape(-1).tolist())
    else:
        request.raw_input_contents.append(encode_bytes(array))
    request.inputs.append(tensor)
    return request


@pytest.fixture
async def stub(triton_repo: Path, inference_server, stub_for):  # type: ignore[no-untyped-def]
    app = await inference_server(triton_repo, model_control_mode="explicit", load_models=MODELS)
    return stub_for(app.address)


def strings(rows: int, cols: int, offset: int = 0) -> np.ndarray:
    return np.array([[str(offset + r * cols + c).encode() for c in range(cols)]
                     for r in range(rows)], dtype=object)  # fmt: skip


@pytest.mark.parametrize("typed", [False, True])
async def test_batched_string_arithmetic_keeps_its_shape(stub, typed: bool) -> None:  # type: ignore[no-untyped-def]
    a, b = strings(3, 16), np.full((3, 16), b"1", dtype=object)
    request = bytes_request("simple_string", "INPUT0", a, typed)
    extra = Tensor(name="INPUT1", datatype="BYTES", shape=[3, 16])
    if typed:
        extra.contents.bytes_contents.extend(b.reshape(-1).tolist())
    else:
        request.raw_input_contents.append(encode_bytes(b))
    request.inputs.append(extra)
    response = await stub.ModelInfer(request)
    total = decode(response, "OUTPUT0")
    assert total.shape == (3, 16) and [o.datatype for o in response.outputs] == ["BYTES"] * 2
    assert total.tolist() == [[str(int(x) + 1).encode() for x in row] for row in a.tolist()]
    assert decode(response, "OUTPUT1")[2, 5] == str(int(a[2, 5]) - 1).encode()


async def test_identity_round_trips_exactly(stub) -> None:  # type: ignore[no-untyped-def]
    values = np.array([[b"he\x00llo", b"", "\u20ac\U0001f600".encode(), b"\x00\x01\x02\x03",
                        b"x" * 5000]], dtype=object)  # fmt: skip
    response = await stub.ModelInfer(bytes_request("simple_identity", "INPUT0", values))
    assert decode(response, "OUTPUT0").tolist() == values.tolist()
    assert list(response.outputs[0].shape) == [1, 5]


async def test_nested_lists_in_and_out(stub) -> None:  # type: ignore[no-untyped-def]
    text = np.array([[b"ab", b"c"], [b"de", b"fg"]], dtype=object)
    response = await stub.ModelInfer(bytes_request("nested_upper", "TEXT", text))
    assert decode(response, "TEXT_OUT").tolist() == [[b"AB", b"C"], [b"DE", b"FG"]]


async def test_a_flat_list_takes_the_declared_shape_and_is_one_output(stub) -> None:  # type: ignore[no-untyped-def]
    response = await stub.ModelInfer(bytes_request("exclaim", "TEXT", strings(2, 3)))
    assert [o.name for o in response.outputs] == ["TEXT_OUT"]
    assert decode(response, "TEXT_OUT").tolist() == [[b"0!", b"1!", b"2!"], [b"3!", b"4!", b"5!"]]


async def test_binary_bytes_reach_a_list_of_tensors_and_come_back(stub) -> None:  # type: ignore[no-untyped-def]
    data = np.array([[b"\xff\xd8\xff\xe0png?"], [b"\x00\x80\x81"]], dtype=object)
    response = await stub.ModelInfer(bytes_request("reverse_bytes", "DATA", data))
    assert decode(response, "REVERSED").tolist() == [[b"?gnp\xe0\xff\xd8\xff"], [b"\x81\x80\x00"]]


async def test_bytes_a_str_cannot_hold_are_refused_clearly(stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ModelInfer(bytes_request("simple_identity", "INPUT0",
                                            np.array([[b"\xff\xfe"]], dtype=object)))  # fmt: skip
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not UTF-8" in err.value.details() and "UINT8" in err.value.details()


async def test_an_output_outside_its_declared_shape_is_a_model_error(stub) -> None:  # type: ignore[no-untyped-def]
    request = pb.ModelInferRequest(model_name="echo_length")
    request.inputs.append(Tensor(name="X", datatype="FP32", shape=[10]))
    request.raw_input_contents.append(np.ones(10, np.float32).tobytes())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "output 'Y' has shape [10]; its config declares [1]" in err.value.details()
    # The server goes on answering.
    answer = await stub.ModelInfer(bytes_request("simple_identity", "INPUT0", strings(1, 2)))
    assert decode(answer, "OUTPUT0").tolist() == [[b"0", b"1"]]
