"""Ensembles, classification and model control with overrides, over real gRPC (tier 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from modelport.inference.codec import encode_bytes
from modelport.proto.inference import grpc_service_pb2 as pb

from tests.inference.requests import Tensor, raw_request, simple_request

A = np.arange(16, dtype=np.int32).reshape(1, 16)


def decoded_strings(response: pb.ModelInferResponse, index: int = 0) -> list[bytes]:
    raw, values, pos = response.raw_output_contents[index], [], 0
    while pos < len(raw):
        size = int.from_bytes(raw[pos : pos + 4], "little")
        values.append(raw[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return values


def classify(request: pb.ModelInferRequest, name: str, count: int) -> pb.ModelInferRequest:
    wanted = request.outputs.add(name=name)
    wanted.parameters["classification"].int64_param = count
    return request


async def test_ensemble_runs_its_members_and_classifies(
    triton_repo: Path, inference_server, stub_for
) -> None:  # type: ignore[no-untyped-def]
    # Loading the ensemble loads the members it needs.
    app = await inference_server(triton_repo, model_control_mode="explicit",
                                 load_models=["preprocess_inception_ensemble"])  # fmt: skip
    stub = stub_for(app.address)
    images = np.array([[b"\x89PNG\r\n\x1a\n one"], [b"\xff\xd8 another image"]], dtype=object)
    request = pb.ModelInferRequest(model_name="preprocess_inception_ensemble", id="e1")
    request.inputs.append(Tensor(name="INPUT", datatype="BYTES", shape=[2, 1]))
    request.raw_input_contents.append(encode_bytes(images))
    response = await stub.ModelInfer(classify(request, "OUTPUT", 3))
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("OUTPUT", "BYTES", [2, 3])
    ]
    top = [s.decode().split(":") for s in decoded_strings(response)]
    assert all(label == f"inception_{index}" for _, index, label in top)
    assert float(top[0][0]) >= float(top[1][0]) >= float(top[2][0])
    ready = {
        m.name for m in (await stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True))).models
    }
    assert {"image_preprocess", "inception_batched", "preprocess_inception_ensemble"} <= ready
    stats = await stub.ModelStatistics(pb.ModelStatisticsRequest())
    counts = {s.name: s.inference_count for s in stats.model_stats}
    assert counts["preprocess_inception_ensemble"] == 2 and counts["image_preprocess"] == 2
    assert counts["inception_batched"] == 2


async def test_classification_of_an_unbatched_model_with_labels(
    triton_repo: Path, inference_server, stub_for
) -> None:  # type: ignore[no-untyped-def]
    app = await inference_server(triton_repo, model_control_mode="explicit",
                                 load_models=["densenet_onnx", "simple"])  # fmt: skip
    stub = stub_for(app.address)
    image = np.random.default_rng(0).random((3, 224, 224), dtype=np.float32)
    request = classify(raw_request("densenet_onnx", {"data_0": ("FP32", image)}), "fc6_1", 2)
    response = await stub.ModelInfer(request)
    assert list(response.outputs[0].shape) == [2]  # no batch dimension: [k]
    assert all(s.decode().count(":") == 2 for s in decoded_strings(response))
    bad = classify(simple_request(A, A), "OUTPUT0", 0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ModelInfer(bad)
    assert "invalid value for 'classification' parameter" in err.value.details()


async def load(stub, name: str, **parameters: object) -> None:  # type: ignore[no-untyped-def]
    request = pb.RepositoryModelLoadRequest(model_name=name)
    for key, value in parameters.items():
        if isinstance(value, bytes):
            request.parameters[key].bytes_param = value
        else:
            request.parameters[key].string_param = str(value)
    await stub.RepositoryModelLoad(request)


async def test_model_control_with_config_and_file_overrides(
    triton_repo: Path, tmp_path: Path, inference_server, stub_for
) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "models"
    shutil.copytree(triton_repo / "simple", repo / "simple")
    app = await inference_server(repo, model_control_mode="explicit")
    stub = stub_for(app.address)
    await load(stub, "simple", config=json.dumps({"max_batch_size": "16"}))
    config = (await stub.ModelConfig(pb.ModelConfigRequest(name="simple"))).config
    assert config.max_batch_size == 16 and [t.name for t in config.input] == ["INPUT0", "INPUT1"]
    await stub.ModelInfer(
        simple_request(np.zeros((12, 16), np.int32), np.zeros((12, 16), np.int32))
    )

    failures = [
        ({"config": '"parameters": {"config": {{"max_batch_size": "16"}}}'},
         grpc.StatusCode.INVALID_ARGUMENT, "failed to load"),
        ({"config": "{}", "file:" + "A" * 256: b"a"},
         grpc.StatusCode.INTERNAL, "failed to poll from model repository"),
        ({"config": json.dumps({"response_cache": {"enable": True}})},
         grpc.StatusCode.INVALID_ARGUMENT, "response_cache.enable is not supported by modelport"),
    ]  # fmt: skip
    for parameters, code, text in failures:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await load(stub, "simple", **parameters)
        assert err.value.code() == code and text in err.value.details(), err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await load(stub, "wrong_model_name")
    assert "failed to load" in err.value.details()
    # A failed reload leaves the model serving.
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="simple"))).ready

    # file: overrides: a whole model from the request, its config given as JSON.
    model = (triton_repo / "simple" / "1" / "model.pt").read_bytes()
    override = {"platform": "pytorch_libtorch", "max_batch_size": 2,
                "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16]},
                          {"name": "INPUT1", "data_type": "TYPE_INT32", "dims": [16]}],
                "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [16]},
                           {"name": "OUTPUT1", "data_type": "TYPE_INT32", "dims": [16]}]}  # fmt: skip
    await load(stub, "sent", config=json.dumps(override), **{"file:3/model.pt": model})
    answer = await stub.ModelInfer(
        raw_request("sent", {"INPUT0": ("INT32", A), "INPUT1": ("INT32", A)})
    )
    assert answer.model_version == "3"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await load(stub, "sent", **{"file:1/../../escape": b"x", "config": "{}"})
    assert "must be a relative path inside the model folder" in err.value.details()
    await stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="sent"))


async def test_fields_modelport_does_not_act_on_fail_the_load_by_name(
    triton_repo: Path, tmp_path: Path, inference_server, stub_for
) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "models"
    shutil.copytree(triton_repo / "simple", repo / "simple")
    config = repo / "simple" / "config.pbtxt"
    config.write_text(config.read_text() + "optimization { cuda { graphs: true } }\n")
    app = await inference_server(repo)
    stub = stub_for(app.address)
    index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
    (entry,) = index.models
    assert entry.state == "UNAVAILABLE"
    assert "optimization.cuda.graphs is not supported by modelport" in entry.reason
