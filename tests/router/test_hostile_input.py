"""Hostile input against a real inference service and through the real router.

Both run as their own processes (`modelport serve inference` and `modelport
serve router` on loopback), started once for the module, so "still alive",
"still answering" and RSS are the processes' own. Hypothesis drives thousands
of cases (tests/support/hostile_messages.py): structurally valid requests with
lying contents, and raw bytes sent on a channel with no serializer. The suite
asserts only what the README documents: every call ends within its deadline
(DEADLINE_EXCEEDED is a hang, a failure) with one of the documented codes,
never UNKNOWN or INTERNAL; every request in a stream gets exactly one answer
or in-band error, matched by id; no traceback in either service's log; and the
processes end alive, answering, with RSS within a generous bound.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelport.inference.samples import build_simple
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc

from tests.support import hostile_messages as hm
from tests.support.string_models import MODELS as STRING_MODELS

SERVICES = Path(__file__).resolve().parents[2] / "services"
CALL_DEADLINE = 10.0  # seconds; DEADLINE_EXCEEDED means the service hung
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
}
RSS_GROWTH_BOUND_MIB = 300  # generous: the cases are small; a leak per case exceeds it
INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"

# Derandomized and without an example database: the same cases on every run.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=(CALL_DEADLINE + 5) * 1000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Service:
    name: str
    process: subprocess.Popen[str]
    address: str = ""
    log: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=400))
    tracebacks: list[str] = field(default_factory=list)

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert found, status
        return int(found.group(1)) / 1024

    def drain(self) -> None:
        """Keep reading the log so the process never blocks on a full pipe."""
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            if "Traceback" in line:
                self.tracebacks.append("".join(list(self.log)[-5:]))


def start(name: str, args: list[str]) -> Service:
    env = {**os.environ, "PYTHONPATH": str(SERVICES)}
    command = [sys.executable, "-m", "modelport.cli", "serve", *args]
    command += ["--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    service = Service(name, process)
    assert process.stderr is not None
    while not service.address:
        line = process.stderr.readline()
        assert line, f"{name} exited: {''.join(service.log)}"
        service.log.append(line)
        found = re.search(r"gRPC listening on (127\.0\.0\.1:\d+)", line)
        service.address = found.group(1) if found else ""
    threading.Thread(target=service.drain, daemon=True).start()
    return service


def stop(service: Service) -> None:
    if service.process.poll() is None:
        service.process.kill()
    service.process.wait()


@dataclass(repr=False)  # a failing case prints the request, not the processes
class Stack:
    inference: Service
    router: Service
    channels: dict[str, grpc.Channel]
    baseline_mib: dict[str, float]


def wait_ready(channel: grpc.Channel, models: list[str]) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    deadline = time.monotonic() + 60
    for model in models:
        while True:
            try:
                if stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=2).ready:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"{model} never became ready"
            time.sleep(0.1)


def answer_valid(channel: grpc.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    assert stub.ModelInfer(hm.valid_simple(2), timeout=CALL_DEADLINE).outputs
    assert stub.ModelInfer(hm.valid_bytes([b"ab", b"c"]), timeout=CALL_DEADLINE).outputs


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    repo = tmp_path_factory.mktemp("hostile") / "models"
    build_simple(repo)
    for name in ("reverse_bytes", "exclaim"):  # two of the string models, BYTES in and out
        module, config = STRING_MODELS[name]
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(f'platform: "pytorch_libtorch"\n{config}')
        torch.jit.script(module().eval()).save(str(repo / name / "1" / "model.pt"))
    models = ["simple", "reverse_bytes", "exclaim"]
    inference = start("inference", ["inference", "--model-repository", str(repo),
                                    "--torch-threads", "1"])  # fmt: skip
    router = None
    channels: dict[str, grpc.Channel] = {}
    try:
        endpoints = [a for m in models for a in ("--endpoint", f"{m}={inference.address}")]
        router = start("router", ["router", *endpoints])
        for service in (inference, router):
            channels[service.name] = grpc.insecure_channel(service.address)
            wait_ready(channels[service.name], models)
            for _ in range(20):  # warm both paths before the baseline
                answer_valid(channels[service.name])
        baseline = {s.name: s.rss_mib() for s in (inference, router)}
        yield Stack(inference, router, channels, baseline)
    finally:
        for channel in channels.values():
            channel.close()
        stop(inference)
        if router is not None:
            stop(router)


TARGETS = ["inference", "router"]


def check_status(error: grpc.RpcError, what: object) -> None:
    code = error.code()
    assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"hung on {what!r}"
    assert code in DOCUMENTED, f"{code}: {error.details()} for {what!r}"
    details = error.details() or ""
    assert "Traceback" not in details
    # grpc's own words when the call broke in transport (the status itself too big to send)
    assert "Stream removed" not in details, f"{code}: {details} for {what!r}"


@pytest.mark.parametrize("target", TARGETS)
@settings(FUZZ, max_examples=450)
@given(request=hm.hostile_requests)
def test_model_infer_structured(stack: Stack, target: str, request: pb.ModelInferRequest) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(stack.channels[target])
    try:
        answer = stub.ModelInfer(request, timeout=CALL_DEADLINE)
    except grpc.RpcError as error:
        check_status(error, request)
        return
    names = [o.name for o in answer.outputs]
    assert len(set(names)) == len(names), f"outputs answered twice: {names}"


@pytest.mark.parametrize("target", TARGETS)
@settings(FUZZ, max_examples=350)
@given(data=hm.raw_messages)
def test_model_infer_raw_bytes(stack: Stack, target: str, data: bytes) -> None:
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes]
    call = stack.channels[target].unary_unary(INFER)  # no serializer: the bytes as sent
    try:
        call(data, timeout=CALL_DEADLINE)
    except grpc.RpcError as error:
        check_status(error, data)


def stream_answers(
    channel: grpc.Channel, messages: list[bytes]
) -> list[pb.ModelStreamInferResponse]:
    call: grpc.StreamStreamMultiCallable[bytes, pb.ModelStreamInferResponse]
    call = channel.stream_stream(
        STREAM, response_deserializer=pb.ModelStreamInferResponse.FromString
    )
    try:
        return list(call(iter(messages), timeout=CALL_DEADLINE))
    except grpc.RpcError as error:
        check_status(error, messages)
        ended = error.code()
        raise AssertionError(f"the stream ended {ended} instead of answering in-band") from error


@pytest.mark.parametrize("target", TARGETS)
@settings(FUZZ, max_examples=80)
@given(requests=st.lists(hm.hostile_requests, min_size=1, max_size=8))
def test_stream_answers_every_request(
    stack: Stack, target: str, requests: list[pb.ModelInferRequest]
) -> None:
    for index, request in enumerate(requests):
        request.id = f"m{index}"
    answers = stream_answers(stack.channels[target], [r.SerializeToString() for r in requests])
    ids = collections.Counter(a.infer_response.id for a in answers)
    assert ids == collections.Counter(r.id for r in requests), answers


@pytest.mark.parametrize("target", TARGETS)
@settings(FUZZ, max_examples=60)
@given(
    messages=st.lists(
        st.one_of(hm.raw_messages, st.integers(0, 999).map(lambda i: f"v{i}")),
        min_size=1,
        max_size=8,
    )
)
def test_stream_of_raw_bytes_answers_each_message(
    stack: Stack, target: str, messages: list[bytes | str]
) -> None:
    # Strings stand for valid requests with that id; bytes are sent as they are.
    sent = [
        m if isinstance(m, bytes) else hm.valid_simple(1, m).SerializeToString() for m in messages
    ]
    answers = stream_answers(stack.channels[target], sent)
    assert len(answers) == len(sent), answers
    valid_ids = collections.Counter(m for m in messages if isinstance(m, str))
    answered = collections.Counter(
        a.infer_response.id
        for a in answers
        if a.infer_response.id in valid_ids and not a.error_message
    )
    assert answered == valid_ids, answers


def test_services_survive_alive_answering_and_bounded(stack: Stack) -> None:
    """Runs last in the module: after every case above, both are intact."""
    for service in (stack.inference, stack.router):
        assert service.process.poll() is None, f"{service.name} died: {''.join(service.log)}"
        answer_valid(stack.channels[service.name])
        grown = service.rss_mib() - stack.baseline_mib[service.name]
        assert grown < RSS_GROWTH_BOUND_MIB, f"{service.name} RSS grew {grown:.0f} MiB"
        assert not service.tracebacks, f"{service.name} logged: {service.tracebacks[:3]}"
