"""The inference server behind its Go front (`--fast-path`, inference/front_end.py).

Real servers on loopback: the InferenceApp in this test's event loop and the
`modelport-fastpath -local` process it starts in front of it. ModelInfer goes
over the Unix socket; every other call is relayed to the private gRPC port.
Each behaviour is checked against the same server with its transport in Python
(`--fast-path off`): a caller must not be able to tell them apart.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from modelport.common.fastpath_process import find_binary
from modelport.errors import FailedPrecondition, InvalidInput
from modelport.inference import front_end
from modelport.inference.settings import InferenceSettings
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pbg

from tests.inference.requests import mlp_request, output, simple_request
from tests.inference.test_entrypoint import SLOW_CONFIG, Slow

INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(autouse=True)
def built() -> None:
    assert find_binary() is not None, "modelport-fastpath is not built: run `make fastpath`"


@pytest.fixture
def slow_repo(repo_copy: Path) -> Path:
    (repo_copy / "slow" / "1").mkdir(parents=True)
    (repo_copy / "slow" / "config.pbtxt").write_text(SLOW_CONFIG)
    torch.jit.script(Slow()).save(str(repo_copy / "slow" / "1" / "model.pt"))
    return repo_copy


async def both(inference_server, repo: Path, **settings: object):  # type: ignore[no-untyped-def]
    """The same repository served with the front and without it."""
    fronted = await inference_server(repo, fast_path="on", **settings)
    plain = await inference_server(repo, fast_path="off", **settings)
    assert fronted.front is not None and plain.front is None
    # The front owns the public port; the Python server listens privately behind it.
    assert fronted.port != fronted.server.port
    return fronted, plain


def outcome(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    return error.code(), error.details() or ""


async def test_answers_match_the_python_transport(inference_server, sample_repo, stub_for):
    fronted, plain = await both(inference_server, sample_repo)
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    request = simple_request(a, b, id="call-7")
    via_front = await stub_for(fronted.address).ModelInfer(request)
    via_python = await stub_for(plain.address).ModelInfer(request)
    assert via_front == via_python
    assert via_front.id == "call-7"
    np.testing.assert_array_equal(output(via_front, "OUTPUT0", np.int32), a + b)
    # Statistics (relayed to the Python server) count the call the front answered.
    stats = await stub_for(fronted.address).ModelStatistics(
        pb.ModelStatisticsRequest(name="simple")
    )
    assert stats.model_stats[0].inference_count == 1


async def test_concurrent_calls_each_get_their_own_answer(inference_server, sample_repo, stub_for):
    fronted = await inference_server(sample_repo, fast_path="on")
    stub = stub_for(fronted.address)
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((1, 256)).astype(np.float32) for _ in range(200)]
    answers = await asyncio.gather(*(stub.ModelInfer(mlp_request(x)) for x in inputs))
    alone = [await stub.ModelInfer(mlp_request(x)) for x in inputs[:5]]
    for answer, single in zip(answers, alone, strict=False):
        np.testing.assert_allclose(
            output(answer, "OUTPUT", np.float32), output(single, "OUTPUT", np.float32), rtol=1e-4
        )
    # Different inputs, different answers: a mixed-up id would show here.
    firsts = {output(a, "OUTPUT", np.float32)[0, 0].item() for a in answers}
    assert len(firsts) == len(inputs)


async def test_errors_are_the_python_transports(inference_server, sample_repo, channel_factory):
    fronted, plain = await both(inference_server, sample_repo)
    bad_shape = simple_request(np.zeros((1, 15), np.int32), np.zeros((1, 15), np.int32))
    cases = [
        pb.ModelInferRequest(model_name="nope").SerializeToString(),  # unknown model
        bad_shape.SerializeToString(),
        b"\xff\xff\xff",  # does not parse
    ]
    for message in cases:
        seen = []
        for app in (fronted, plain):
            call = channel_factory(app.address).unary_unary(INFER)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(message, timeout=10)
            seen.append(outcome(caught.value))
        assert seen[0] == seen[1], message
        assert seen[0][0] in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
        assert "Traceback" not in seen[0][1]


async def test_too_large_a_message_is_refused_whole(inference_server, sample_repo, stub_for):
    fronted = await inference_server(sample_repo, fast_path="on", max_message_mb=1)
    big = mlp_request(np.zeros((1100, 256), np.float32))  # ~1.1 MB
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub_for(fronted.address).ModelInfer(big)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    small = mlp_request(np.zeros((1, 256), np.float32))
    assert len((await stub_for(fronted.address).ModelInfer(small)).outputs) == 1


async def test_a_large_message_crosses_the_socket_intact(inference_server, sample_repo, stub_for):
    fronted, plain = await both(inference_server, sample_repo)
    rng = np.random.default_rng(5)
    full = mlp_request(rng.standard_normal((64, 256)).astype(np.float32))
    answers = [await stub_for(app.address).ModelInfer(full) for app in (fronted, plain)]
    assert answers[0] == answers[1]
    # 2 MB, more than one read on either side of the socket; refused (batch > 64) alike.
    huge = mlp_request(rng.standard_normal((2048, 256)).astype(np.float32))
    seen = []
    for app in (fronted, plain):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub_for(app.address).ModelInfer(huge)
        seen.append(outcome(caught.value))
    assert seen[0] == seen[1]
    assert seen[0][0] == grpc.StatusCode.INVALID_ARGUMENT


async def test_streams_health_metadata_and_reflection_are_relayed(
    inference_server, sample_repo, channel_factory
):
    fronted = await inference_server(sample_repo, fast_path="on")
    channel = channel_factory(fronted.address)
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    stub = pbg.GRPCInferenceServiceStub(channel)
    metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name="simple"))
    assert [i.name for i in metadata.inputs] == ["INPUT0", "INPUT1"]
    a = np.ones((1, 16), np.int32)
    requests = [simple_request(a * k, a, id=str(k)) for k in range(3)]

    async def feed():  # type: ignore[no-untyped-def]
        for request in requests:
            yield request

    answers = [r async for r in stub.ModelStreamInfer(feed())]
    assert sorted(r.infer_response.id for r in answers) == ["0", "1", "2"]
    assert all(not r.error_message for r in answers)


async def test_deadline_and_cancel_end_the_call_not_the_server(
    inference_server, slow_repo, stub_for
):
    fronted = await inference_server(slow_repo, fast_path="on")
    stub = stub_for(fronted.address)
    slow = pb.ModelInferRequest(model_name="slow")
    slow.inputs.add(name="X", datatype="FP32", shape=[1])
    slow.raw_input_contents.append(np.ones(1, np.float32).tobytes())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(slow, timeout=0.05)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    before = fronted.front.counts.cancelled
    call = stub.ModelInfer(slow)
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # The front told this process, which stopped working on the call.
    deadline = time.monotonic() + 5
    while fronted.front.counts.cancelled == before and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert fronted.front.counts.cancelled > before
    answer = await stub.ModelInfer(simple_request(np.ones((1, 16), np.int32),
                                                  np.ones((1, 16), np.int32)))  # fmt: skip
    assert len(answer.outputs) == 2


async def test_a_call_in_flight_finishes_through_the_drain(inference_server, slow_repo, stub_for):
    fronted = await inference_server(slow_repo, fast_path="on")
    slow = pb.ModelInferRequest(model_name="slow")
    slow.inputs.add(name="X", datatype="FP32", shape=[1])
    slow.raw_input_contents.append(np.ones(1, np.float32).tobytes())
    call = asyncio.ensure_future(stub_for(fronted.address).ModelInfer(slow, timeout=30))
    batcher = fronted.manager.get("slow").batcher
    waited = time.monotonic()
    while not batcher._active:  # until the call runs (a busy machine connects slowly)
        assert time.monotonic() - waited < 10, "the call never reached the model"
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await fronted.stop(grace=20)
    answer = await call
    assert answer.model_name == "slow"
    assert time.monotonic() - started < 20
    assert fronted.front._process.poll() is not None  # the front is gone with the server


async def test_the_front_is_started_again_on_its_port(inference_server, sample_repo, stub_for):
    fronted = await inference_server(sample_repo, fast_path="on")
    first = fronted.front._process
    first.kill()
    request = simple_request(np.ones((1, 16), np.int32), np.ones((1, 16), np.int32))
    deadline = time.monotonic() + 15
    while True:
        try:
            answer = await stub_for(fronted.address).ModelInfer(request, timeout=2)
            break
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() < deadline, "the front did not come back"
            await asyncio.sleep(0.2)
    assert fronted.front._process is not first
    assert len(answer.outputs) == 2


def test_what_needs_python_keeps_python(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("x"), key.write_text("x")
    tls = InferenceSettings(tls_cert_file=cert, tls_key_file=key)
    assert "TLS" in front_end.choose(tls).reason and front_end.choose(tls).binary is None
    traced = InferenceSettings(otlp_endpoint="127.0.0.1:4317")
    assert front_end.choose(traced).binary is None
    assert front_end.choose(InferenceSettings()).binary is not None  # auto, built
    assert front_end.choose(InferenceSettings(fast_path="off")).binary is None
    with pytest.raises(FailedPrecondition, match="TLS"):
        front_end.choose(InferenceSettings(tls_cert_file=cert, tls_key_file=key, fast_path="on"))
    with pytest.raises(FailedPrecondition, match="modelport-fastpath"):
        front_end.choose(InferenceSettings(fast_path="on", fast_path_binary=tmp_path / "none"))
    with pytest.raises(InvalidInput, match="--workers"):
        InferenceSettings(fast_path="on", workers=2)
    # Each worker of a supervisor serves its own gRPC port share: no front.
    assert InferenceSettings(workers=2).for_worker(2).fast_path == "off"


async def test_the_audit_names_the_caller_not_the_front(
    inference_server, repo_copy, caplog: pytest.LogCaptureFixture
):
    # The front on IPv6 loopback relays to the private server on IPv4 loopback: an
    # audit event naming [::1] names the caller, one naming 127.0.0.1 the front.
    fronted = await inference_server(
        repo_copy, fast_path="on", host="::1", model_control_mode="explicit"
    )
    channel = grpc.aio.insecure_channel(f"[::1]:{fronted.port}")
    try:
        with caplog.at_level("INFO", logger="modelport.audit"):
            await pbg.GRPCInferenceServiceStub(channel).RepositoryModelLoad(
                pb.RepositoryModelLoadRequest(model_name="simple")
            )
    finally:
        await channel.close()
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "modelport.audit"]
    assert events, "the load was not audited"
    assert all(e["peer"].startswith("ipv6:[::1]:") for e in events), events
