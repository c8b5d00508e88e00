"""What Triton's gRPC Python examples exercise, with the official tritonclient, against
the torch equivalents of their models (`modelport samples --triton all`)."""

from __future__ import annotations

import json
import queue
import uuid
from functools import partial

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

VALUES = [0, 11, 7, 5, 3, 2, 0, 1]


def test_strings_and_bytes_round_trip(triton: grpcclient.InferenceServerClient) -> None:
    numbers = np.arange(32, dtype=np.int32).reshape(2, 16)
    a = np.array([[str(x).encode() for x in row] for row in numbers], dtype=object)
    b = np.full((2, 16), b"1", dtype=object)
    inputs = [grpcclient.InferInput("INPUT0", [2, 16], "BYTES"),
              grpcclient.InferInput("INPUT1", [2, 16], "BYTES")]  # fmt: skip
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = triton.infer("simple_string", inputs)
    assert result.as_numpy("OUTPUT0").shape == (2, 16)
    assert [int(x) for x in result.as_numpy("OUTPUT0").reshape(-1)] == list(range(1, 33))
    assert [int(x) for x in result.as_numpy("OUTPUT1").reshape(-1)] == list(range(-1, 31))
    for data in (np.array([[b"he\x00llo"] * 16], dtype=object),
                 np.array([[b"\x00\x01\x02\x03"] * 16], dtype=np.bytes_)):  # fmt: skip
        ident = grpcclient.InferInput("INPUT0", list(data.shape), "BYTES")
        ident.set_data_from_numpy(data)
        back = triton.infer("simple_identity", [ident]).as_numpy("OUTPUT0")
        assert back.shape == data.shape and back.tolist() == data.astype(object).tolist()


def test_explicit_contents_and_triton_error_texts(triton_url: str) -> None:
    with grpc.insecure_channel(triton_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="simple_int8")
        for name, values in (("INPUT0", range(16)), ("INPUT1", [1] * 16)):
            tensor = request.inputs.add(name=name, datatype="INT8", shape=[1, 16])
            tensor.contents.int_contents[:] = list(values)
        response = stub.ModelInfer(request)
        total = np.frombuffer(response.raw_output_contents[0], np.int8)
        assert total.tolist() == list(range(1, 17))
        request.model_version = "wrong_specification"
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request)
        assert ("failed to get model version from specified version string "
                "'wrong_specification'") in str(err.value)  # fmt: skip
        request.model_version = ""
        request.model_name = "simple"
        for tensor in request.inputs:
            tensor.datatype = "INT32"
        request.raw_input_contents.append(np.arange(8, dtype=np.int32).tobytes())
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request)
        assert ("contents field must not be specified when using raw_input_contents for "
                "'INPUT0' for model 'simple'") in str(err.value)  # fmt: skip
        strings = service_pb2.ModelInferRequest(model_name="simple_string")
        for name, values in (("INPUT0", [str(i) for i in range(16)]), ("INPUT1", ["1"] * 16)):
            tensor = strings.inputs.add(name=name, datatype="BYTES", shape=[1, 16])
            tensor.contents.bytes_contents.extend(v.encode() for v in values)
        answer = stub.ModelInfer(strings)
        total = utils.deserialize_bytes_tensor(answer.raw_output_contents[0])
        assert [int(x) for x in total] == list(range(1, 17))


def test_unknown_model_wording(triton: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as err:
        triton.get_model_metadata("wrong_model_name")
    assert "Request for unknown model" in err.value.message()


def sequence_inputs(value: int) -> list[grpcclient.InferInput]:
    data = np.full((1, 1), value, dtype=np.int32)
    tensor = grpcclient.InferInput("INPUT", [1, 1], "INT32")
    tensor.set_data_from_numpy(data)
    return [tensor]


def expected(values: list[int], corrid: int) -> list[int]:
    return [1, *values[1:-1], values[-1] + corrid]


def test_sequences_sync(triton: grpcclient.InferenceServerClient) -> None:
    got = []
    for i, v in enumerate(VALUES):
        result = triton.infer("simple_dyna_sequence", sequence_inputs(v), sequence_id=1000,
                              sequence_start=i == 0, sequence_end=i == len(VALUES) - 1)  # fmt: skip
        got.append(int(result.as_numpy("OUTPUT")[0][0]))
    assert got == expected(VALUES, 1000)
    uid = str(uuid.uuid4())  # string ids, on a model without a CORRID control
    plain = [int(triton.infer("simple_sequence", sequence_inputs(v), sequence_id=uid,
                              sequence_start=i == 0, sequence_end=i == 2).as_numpy("OUTPUT")[0][0])
             for i, v in enumerate([20, -11, -7])]  # fmt: skip
    assert plain == [21, -11, -7]


def test_sequences_streaming_and_decoupled(triton: grpcclient.InferenceServerClient) -> None:
    answers: queue.Queue[object] = queue.Queue()
    triton.start_stream(callback=partial(lambda q, result, error: q.put(error or result), answers))
    sequences = {"1001": ("simple_dyna_sequence", 1001), "1002": ("simple_string_dyna_sequence",
                                                                    "1002")}  # fmt: skip
    for i, v in enumerate(VALUES):
        for key, (model, corrid) in sequences.items():
            triton.async_stream_infer(model, sequence_inputs(v), request_id=f"{key}_{i}",
                                      sequence_id=corrid, sequence_start=i == 0,
                                      sequence_end=i == len(VALUES) - 1)  # fmt: skip
    repeat = [grpcclient.InferInput("IN", [4], "INT32"), grpcclient.InferInput("DELAY", [4], "UINT32"),
              grpcclient.InferInput("WAIT", [1], "UINT32")]  # fmt: skip
    repeat[0].set_data_from_numpy(np.arange(100, 104, dtype=np.int32))
    repeat[1].set_data_from_numpy(np.zeros(4, np.uint32))
    repeat[2].set_data_from_numpy(np.zeros(1, np.uint32))
    triton.async_stream_infer("repeat_int32", repeat, request_id="rep",
                              enable_empty_final_response=True)  # fmt: skip
    got: dict[str, dict[int, int]] = {"1001": {}, "1002": {}}
    repeated, finals = [], []
    for _ in range(2 * len(VALUES) + 4):
        item = answers.get(timeout=30)
        assert not isinstance(item, InferenceServerException), item
        response = item.get_response()  # type: ignore[attr-defined]
        if response.id == "rep":
            finals.append(response.parameters["triton_final_response"].bool_param)
            if response.outputs:
                repeated.append(int(item.as_numpy("OUT")[0]))  # type: ignore[attr-defined]
            continue
        key, index = response.id.split("_")
        got[key][int(index)] = int(item.as_numpy("OUTPUT")[0][0])  # type: ignore[attr-defined]
    triton.stop_stream()
    assert [got["1001"][i] for i in range(len(VALUES))] == expected(VALUES, 1001)
    running = list(np.cumsum(VALUES))
    running[-1] += 1002
    assert [got["1002"][i] for i in range(len(VALUES))] == running
    # The last of the decoupled answers carries the final flag: no empty response follows.
    assert repeated == [100, 101, 102, 103] and finals == [False, False, False, True]
    assert answers.empty()


def test_system_shared_memory(triton: grpcclient.InferenceServerClient) -> None:
    triton.unregister_system_shared_memory()
    triton.unregister_cuda_shared_memory()
    a, b = np.arange(16, dtype=np.int32), np.ones(16, dtype=np.int32)
    size = a.nbytes
    key = f"/modelport-conf-{uuid.uuid4().hex[:8]}"
    out_key = key + "-out"
    ip = shm.create_shared_memory_region("in", key, size * 2)
    op = shm.create_shared_memory_region("out", out_key, size * 2)
    try:
        shm.set_shared_memory_region(ip, [a])
        shm.set_shared_memory_region(ip, [b], offset=size)
        triton.register_system_shared_memory("in", key, size * 2)
        triton.register_system_shared_memory("out", out_key, size * 2)
        inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
                  grpcclient.InferInput("INPUT1", [1, 16], "INT32")]  # fmt: skip
        inputs[0].set_shared_memory("in", size)
        inputs[1].set_shared_memory("in", size, offset=size)
        outputs = [grpcclient.InferRequestedOutput("OUTPUT0"),
                   grpcclient.InferRequestedOutput("OUTPUT1")]  # fmt: skip
        outputs[0].set_shared_memory("out", size)
        outputs[1].set_shared_memory("out", size, offset=size)
        result = triton.infer("simple", inputs, outputs=outputs)
        out0 = result.get_output("OUTPUT0")
        total = shm.get_contents_as_numpy(op, np.int32, out0.shape)
        diff = shm.get_contents_as_numpy(op, np.int32, [1, 16], offset=size)
        assert total[0].tolist() == (a + b).tolist() and diff[0].tolist() == (a - b).tolist()
        status = triton.get_system_shared_memory_status()
        assert sorted(status.regions) == ["in", "out"]
        with pytest.raises(InferenceServerException):
            triton.register_cuda_shared_memory("gpu", b"\x00" * 64, 0, 64)
        triton.unregister_system_shared_memory()
        assert not triton.get_system_shared_memory_status().regions
    finally:
        shm.destroy_shared_memory_region(ip)
        shm.destroy_shared_memory_region(op)


def test_model_control_with_overrides(triton: grpcclient.InferenceServerClient) -> None:
    triton.load_model("simple", config=json.dumps({"max_batch_size": "16"}))
    assert triton.get_model_config("simple").config.max_batch_size == 16
    with pytest.raises(InferenceServerException) as err:
        triton.load_model("simple", config='"parameters": {"config": {{"max_batch_size": "16"}}}')
    assert "failed to load" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        triton.load_model("simple", config="{}", files={"file:" + "A" * 256: b"a"})
    assert err.value.status() == "StatusCode.INTERNAL"
    assert "failed to poll from model repository" in err.value.message()
    assert triton.is_server_live() and triton.is_model_ready("simple")
    with pytest.raises(InferenceServerException) as err:
        triton.load_model("wrong_model_name")
    assert "failed to load" in err.value.message()
    triton.unload_model("simple_int8")
    assert not triton.is_model_ready("simple_int8")
    triton.load_model("simple_int8")
    assert triton.is_model_ready("simple_int8")


def test_classification_and_the_ensemble(triton: grpcclient.InferenceServerClient) -> None:
    image = np.random.default_rng(1).random((3, 224, 224), dtype=np.float32)
    tensor = grpcclient.InferInput("data_0", [3, 224, 224], "FP32")
    tensor.set_data_from_numpy(image)
    result = triton.infer("densenet_onnx", [tensor],
                          outputs=[grpcclient.InferRequestedOutput("fc6_1", class_count=3)])  # fmt: skip
    classes = result.as_numpy("fc6_1")
    assert classes.shape == (3,)
    assert all(c.decode().split(":")[2].startswith("densenet_") for c in classes)
    files = np.array([[b"\x89PNG\r\n\x1a\nfirst"], [b"\xff\xd8\xff second"]], dtype=np.object_)
    encoded = grpcclient.InferInput("INPUT", [2, 1], "BYTES")
    encoded.set_data_from_numpy(files)
    result = triton.infer("preprocess_inception_ensemble", [encoded],
                          outputs=[grpcclient.InferRequestedOutput("OUTPUT", class_count=2)])  # fmt: skip
    top = result.as_numpy("OUTPUT")
    assert top.shape == (2, 2)
    assert all(entry.decode().count(":") == 2 for entry in top.reshape(-1))
