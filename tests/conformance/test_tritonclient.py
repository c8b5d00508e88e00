"""The official tritonclient[grpc] against a live modelport: what Triton users run."""

from __future__ import annotations

import queue
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 2, dtype=np.int32)


def simple_inputs(a: np.ndarray, b: np.ndarray) -> list[grpcclient.InferInput]:
    inputs = [grpcclient.InferInput("INPUT0", list(a.shape), "INT32"),
              grpcclient.InferInput("INPUT1", list(b.shape), "INT32")]  # fmt: skip
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def test_health_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("simple") and client.is_model_ready("mlp")
    assert not client.is_model_ready("missing")
    server = client.get_server_metadata()
    assert server.name == "modelport"
    meta = client.get_model_metadata("simple")
    assert [(i.name, i.datatype, list(i.shape)) for i in meta.inputs] == [
        ("INPUT0", "INT32", [-1, 16]),
        ("INPUT1", "INT32", [-1, 16]),
    ]
    assert meta.platform == "pytorch_libtorch"


def test_model_config(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("mlp", as_json=True)["config"]
    assert config["name"] == "mlp" and config["platform"] == "torch_export"
    assert config["max_batch_size"] == 64
    assert config["input"][0]["dims"] == ["256"] and config["input"][0]["data_type"] == "TYPE_FP32"
    assert "dynamic_batching" in config


def test_infer_raw(client: grpcclient.InferenceServerClient) -> None:
    outputs = [
        grpcclient.InferRequestedOutput("OUTPUT0"),
        grpcclient.InferRequestedOutput("OUTPUT1"),
    ]
    result = client.infer("simple", simple_inputs(A, B), outputs=outputs, request_id="r1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
    assert result.get_response().id == "r1"


def test_infer_typed_contents_with_triton_stubs(server_url: str) -> None:
    import grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server_url))
    request = service_pb2.ModelInferRequest(model_name="simple")
    for name, array in (("INPUT0", A), ("INPUT1", B)):
        tensor = request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        tensor.contents.int_contents.extend(array.ravel().tolist())
    response = stub.ModelInfer(request)
    sums = np.frombuffer(response.raw_output_contents[0], dtype=np.int32)
    np.testing.assert_array_equal(sums, (A + B).ravel())


def test_streaming_infer(client: grpcclient.InferenceServerClient) -> None:
    answers: queue.Queue = queue.Queue()  # type: ignore[type-arg]
    client.start_stream(callback=partial(lambda q, result, error: q.put((result, error)), answers))
    for i in range(4):
        client.async_stream_infer("simple", simple_inputs(A, B * i), request_id=str(i))
    got = {}
    for _ in range(4):
        result, error = answers.get(timeout=30)
        assert error is None
        got[result.get_response().id] = result.as_numpy("OUTPUT0")
    client.stop_stream()
    for i in range(4):
        np.testing.assert_array_equal(got[str(i)], A + B * i)


def test_load_unload_and_index(client: grpcclient.InferenceServerClient) -> None:
    client.unload_model("simple")
    assert not client.is_model_ready("simple")
    states = {m.name: m.state for m in client.get_model_repository_index().models}
    assert states["simple"] == "UNAVAILABLE" and states["mlp"] == "READY"
    client.load_model("simple")
    assert client.is_model_ready("simple")
    result = client.infer("simple", simple_inputs(A, B))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)


def test_statistics_show_batching(client: grpcclient.InferenceServerClient) -> None:
    x = np.ones((1, 256), dtype=np.float32)
    inputs = [grpcclient.InferInput("INPUT", [1, 256], "FP32")]
    inputs[0].set_data_from_numpy(x)
    for _ in range(3):
        client.infer("mlp", inputs)
    stats = client.get_inference_statistics("mlp").model_stats[0]
    assert stats.name == "mlp" and stats.inference_count >= 3
    assert stats.execution_count >= 1 and stats.inference_stats.success.count >= 3


@pytest.mark.parametrize(
    ("call", "status", "text"),
    [
        (lambda c: c.infer("missing", simple_inputs(A, B)), "StatusCode.NOT_FOUND", "missing"),
        (lambda c: c.infer("simple", simple_inputs(A, B), model_version="7"), "StatusCode.NOT_FOUND", "version 7 is not found"),
        (lambda c: c.infer("simple", simple_inputs(A[:, :4], B[:, :4])), "StatusCode.INVALID_ARGUMENT", "INPUT0"),
        (lambda c: c.infer("simple", simple_inputs(np.zeros((9, 16), np.int32), np.zeros((9, 16), np.int32))),
         "StatusCode.INVALID_ARGUMENT", "max_batch_size"),
        (lambda c: c.get_model_metadata("missing"), "StatusCode.NOT_FOUND", "missing"),
        (lambda c: c.register_system_shared_memory("r", "/r", 8), "StatusCode.FAILED_PRECONDITION", "--allow-shared-memory"),
        (lambda c: c.register_cuda_shared_memory("g", b"\0" * 64, 0, 64), "StatusCode.UNAVAILABLE", "CUDA shared memory"),
    ],
)  # fmt: skip
def test_error_codes(
    client: grpcclient.InferenceServerClient, call, status: str, text: str
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as info:
        call(client)
    assert info.value.status() == status
    assert text in info.value.message()


def test_generated_code_imports_under_this_protobuf() -> None:
    """Our generated modules (protobuf 5.29 gencode) import under tritonclient's protobuf 6."""
    code = (
        "import google.protobuf as p; assert p.__version__.startswith('6.'), p.__version__;"
        "from modelport.proto.inference import grpc_service_pb2, grpc_service_pb2_grpc;"
        "print(grpc_service_pb2.ModelInferRequest(model_name='m').SerializeToString())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
