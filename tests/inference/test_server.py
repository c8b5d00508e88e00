"""The inference service over real gRPC on loopback (tier 2)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from modelport.inference.samples import mlp_module
from modelport.proto.inference import grpc_service_pb2 as pb

from tests.inference.requests import mlp_request, output, simple_request

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)


async def test_health_metadata_and_config(sample_repo: Path, inference_server, stub_for) -> None:
    app = await inference_server(sample_repo)
    stub = stub_for(app.address)
    assert (await stub.ServerLive(pb.ServerLiveRequest())).live
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="simple"))).ready
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="simple", version="9"))).ready
    server = await stub.ServerMetadata(pb.ServerMetadataRequest())
    assert server.name == "modelport" and "model_repository" in server.extensions

    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="mlp"))
    assert meta.platform == "torch_export" and list(meta.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("INPUT", "FP32", [-1, 256])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("OUTPUT", "FP32", [-1, 16])
    ]

    config = (await stub.ModelConfig(pb.ModelConfigRequest(name="simple"))).config
    assert config.max_batch_size == 8 and config.platform == "pytorch_libtorch"
    assert [i.name for i in config.input] == ["INPUT0", "INPUT1"]

    channel = grpc.aio.insecure_channel(app.address)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "mlp", "simple"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = [s.name async for r in replies for s in r.list_services_response.service]
    assert "inference.GRPCInferenceService" in names and "grpc.health.v1.Health" in names
    await channel.close()


async def test_infer_raw_typed_and_selected_outputs(
    sample_repo: Path, inference_server, stub_for
) -> None:
    stub = stub_for((await inference_server(sample_repo)).address)
    response = await stub.ModelInfer(simple_request(A, B, id="abc"))
    assert response.id == "abc" and response.model_name == "simple"
    np.testing.assert_array_equal(output(response, "OUTPUT0", np.int32), A + B)
    np.testing.assert_array_equal(output(response, "OUTPUT1", np.int32), A - B)

    typed = pb.ModelInferRequest(model_name="simple", outputs=[{"name": "OUTPUT1"}])
    for name, array in (("INPUT0", A), ("INPUT1", B)):
        tensor = typed.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        tensor.contents.int_contents.extend(array.ravel().tolist())
    response = await stub.ModelInfer(typed)
    assert [o.name for o in response.outputs] == ["OUTPUT1"]
    np.testing.assert_array_equal(output(response, "OUTPUT1", np.int32), A - B)


async def test_64_concurrent_requests_are_batched_and_correct(
    sample_repo: Path, inference_server, stub_for
) -> None:
    stub = stub_for((await inference_server(sample_repo)).address)
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal((1, 256), dtype=np.float32) for _ in range(64)]
    responses = await asyncio.gather(*(stub.ModelInfer(mlp_request(x)) for x in inputs))
    with torch.inference_mode():
        expected = mlp_module()(torch.from_numpy(np.concatenate(inputs))).numpy()
    for i, response in enumerate(responses):
        np.testing.assert_allclose(
            output(response, "OUTPUT", np.float32)[0], expected[i], rtol=1e-4, atol=1e-5
        )
    stats = (await stub.ModelStatistics(pb.ModelStatisticsRequest(name="mlp"))).model_stats[0]
    assert stats.inference_count == 64
    assert 0 < stats.execution_count < 64
    assert stats.inference_stats.success.count == 64
    assert sum(b.compute_infer.count for b in stats.batch_stats) == stats.execution_count


async def test_streaming_answers_each_request_and_errors_in_band(
    sample_repo: Path, inference_server, stub_for
) -> None:
    stub = stub_for((await inference_server(sample_repo)).address)
    bad = simple_request(A, B, id="bad")
    bad.inputs[0].datatype = "FP32"
    requests = [simple_request(A, B * i, id=f"r{i}") for i in range(5)] + [bad]
    answers = [a async for a in stub.ModelStreamInfer(iter(requests))]
    assert len(answers) == 6
    by_id = {a.infer_response.id: a for a in answers}
    assert "datatype FP32, expected INT32" in by_id["bad"].error_message
    for i in range(5):
        answer = by_id[f"r{i}"]
        assert not answer.error_message
        np.testing.assert_array_equal(output(answer.infer_response, "OUTPUT0", np.int32), A + B * i)


async def test_a_stream_answers_a_message_that_does_not_parse_in_band_and_goes_on(
    sample_repo: Path, inference_server, channel_factory
) -> None:
    """3 valid + 1 undecodable + 3 valid: 7 answers, the bad one in-band (it used to end
    the stream OK with the running requests cancelled: 0 answers)."""
    channel = channel_factory((await inference_server(sample_repo)).address)
    call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
    good = [simple_request(A, B * i, id=f"r{i}").SerializeToString() for i in range(6)]
    # A truncated message: its id (field 3) is readable, the rest is cut short.
    broken = simple_request(A, B, id="broken").SerializeToString()[:-5]
    sent = [*good[:3], broken, *good[3:]]
    answers = [pb.ModelStreamInferResponse.FromString(m) async for m in call(iter(sent))]
    by_id = {a.infer_response.id: a for a in answers}
    assert len(answers) == 7 and set(by_id) == {f"r{i}" for i in range(6)} | {"broken"}
    assert "not a valid inference.ModelInferRequest" in by_id["broken"].error_message
    assert not any(by_id[f"r{i}"].error_message for i in range(6))


@pytest.mark.parametrize(
    ("request_", "code", "text"),
    [
        (pb.ModelInferRequest(model_name="nope"), grpc.StatusCode.NOT_FOUND,
         "Request for unknown model: 'nope' is not found"),
        (simple_request(A, B, model_version="4"), grpc.StatusCode.NOT_FOUND,
         "Request for unknown model: 'simple' version 4 is not found"),
        (simple_request(A, B, model_version="wrong"), grpc.StatusCode.INVALID_ARGUMENT,
         "failed to get model version from specified version string 'wrong'"),
        (simple_request(A, B[:, :8]), grpc.StatusCode.INVALID_ARGUMENT, "input 'INPUT1' has shape [1, 8]"),
        (simple_request(np.zeros((9, 16), np.int32), np.zeros((9, 16), np.int32)),
         grpc.StatusCode.INVALID_ARGUMENT, "max_batch_size is 8"),
        (mlp_request(np.zeros((1, 256), np.float32), outputs=[{"name": "X"}]),
         grpc.StatusCode.INVALID_ARGUMENT, "unknown output 'X'"),
    ],
)  # fmt: skip
async def test_errors_have_codes_and_say_what_is_wrong(
    sample_repo: Path, inference_server, stub_for, request_, code, text
) -> None:
    stub = stub_for((await inference_server(sample_repo)).address)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(request_)
    assert info.value.code() == code
    assert text in info.value.details()
    # the server keeps serving after a bad request
    assert (await stub.ModelInfer(simple_request(A, B))).outputs


async def test_message_size_limit_is_enforced(
    sample_repo: Path, inference_server, stub_for
) -> None:
    stub = stub_for((await inference_server(sample_repo, max_message_mb=1)).address)
    big = mlp_request(np.zeros((64, 256), np.float32))
    big.raw_input_contents[0] = bytes(2 * 1024 * 1024)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(big)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_explicit_load_and_unload(sample_repo: Path, inference_server, stub_for) -> None:
    app = await inference_server(sample_repo, model_control_mode="explicit", load_models=["simple"])
    stub = stub_for(app.address)
    index = {
        m.name: m.state for m in (await stub.RepositoryIndex(pb.RepositoryIndexRequest())).models
    }
    assert index == {"mlp": "UNAVAILABLE", "simple": "READY"}
    await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="mlp"))
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="mlp"))).ready
    await stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="simple"))
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="simple"))).ready
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(simple_request(A, B))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="ghost"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    ready = await stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True))
    assert [m.name for m in ready.models] == ["mlp"]


async def test_load_is_refused_without_explicit_mode(
    sample_repo: Path, inference_server, stub_for
) -> None:
    stub = stub_for((await inference_server(sample_repo)).address)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="mlp"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--model-control-mode explicit" in info.value.details()


async def test_broken_and_pickled_models_fail_alone(
    repo_copy: Path, inference_server, stub_for
) -> None:
    broken = repo_copy / "broken" / "1"
    broken.mkdir(parents=True)
    (repo_copy / "broken" / "config.pbtxt").write_text('platform: "torch_export"')
    (broken / "model.pt2").write_bytes(b"not a zip")
    pickled = repo_copy / "pickled" / "1"
    pickled.mkdir(parents=True)
    (repo_copy / "pickled" / "config.pbtxt").write_text(
        (repo_copy / "simple" / "config.pbtxt").read_text().replace('"simple"', '"pickled"')
    )
    torch.save(torch.nn.Linear(2, 2), pickled / "model.pt")  # a pickle: must be refused
    stub = stub_for((await inference_server(repo_copy)).address)
    index = {m.name: m for m in (await stub.RepositoryIndex(pb.RepositoryIndexRequest())).models}
    assert (
        index["broken"].state == "UNAVAILABLE"
        and "not a torch.export archive" in index["broken"].reason
    )
    assert (
        index["pickled"].state == "UNAVAILABLE" and "pickles are refused" in index["pickled"].reason
    )
    assert index["simple"].state == "READY" and index["mlp"].state == "READY"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(pb.ModelInferRequest(model_name="broken"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (await stub.ModelInfer(simple_request(A, B))).outputs


async def test_hot_swap_under_load_drops_nothing(
    repo_copy: Path, inference_server, stub_for
) -> None:
    """Replace `simple` v1 with a directory serving v2 while requests flow."""
    app = await inference_server(repo_copy)
    stub = stub_for(app.address)
    v2 = repo_copy.parent / "simple-v2"
    (v2 / "2").mkdir(parents=True)
    (v2 / "config.pbtxt").write_text((repo_copy / "simple" / "config.pbtxt").read_text())
    (v2 / "2" / "model.pt").write_bytes((repo_copy / "simple" / "1" / "model.pt").read_bytes())
    versions: list[str] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            response = await stub.ModelInfer(simple_request(A, B))
            np.testing.assert_array_equal(output(response, "OUTPUT0", np.int32), A + B)
            versions.append(response.model_version)

    clients = [asyncio.create_task(client()) for _ in range(8)]
    await asyncio.sleep(0.3)
    await app.manager.load_directory("simple", v2, versions=[2])
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*clients)  # any failed request raises here
    assert versions[0] == "1" and versions[-1] == "2"
    assert versions.index("2") > 0 and "1" not in versions[versions.index("2") + 8 :]
