"""`modelport serve inference` as a process: env flags, /metrics, SIGTERM drain (tier 3)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from modelport.proto.inference import grpc_service_pb2_grpc as pbg
from prometheus_client.parser import text_string_to_metric_families

from tests.inference.requests import raw_request, simple_request

SLOW_CONFIG = """platform: "pytorch_libtorch" max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]"""


class Slow(torch.nn.Module):
    """About half a second of matrix work per call: an in-flight request to drain."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.full((192, 192), 0.01)
        for _ in range(400):
            y = torch.tanh(y @ y)
        return x + y.sum() * 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(sample_repo: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, int]]:
    repo = tmp_path / "models"
    shutil.copytree(sample_repo, repo)
    (repo / "slow" / "1").mkdir(parents=True)
    (repo / "slow" / "config.pbtxt").write_text(SLOW_CONFIG)
    torch.jit.script(Slow()).save(str(repo / "slow" / "1" / "model.pt"))
    grpc_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "MODELPORT_MODEL_REPOSITORY": str(repo),
        "MODELPORT_HOST": "127.0.0.1",
        "MODELPORT_GRPC_PORT": str(grpc_port),
        "MODELPORT_METRICS_PORT": str(metrics_port),
        "MODELPORT_GRACE_SECONDS": "20",
        "MODELPORT_LOG_FORMAT": "json",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "modelport.cli", "serve", "inference"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    address = f"127.0.0.1:{grpc_port}"
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
        except grpc.RpcError:
            pass
        assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("server did not report SERVING")
    yield process, address, metrics_port
    if process.poll() is None:
        process.kill()
        process.wait()


def test_metrics_count_requests(served: tuple[subprocess.Popen[bytes], str, int]) -> None:
    _, address, metrics_port = served
    stub = pbg.GRPCInferenceServiceStub(grpc.insecure_channel(address))
    a = np.ones((1, 16), np.int32)
    for _ in range(3):
        stub.ModelInfer(simple_request(a, a))
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(simple_request(a, a[:, :4]))
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        .read()
        .decode()
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    ok = ("modelport_inference_requests_total",
          (("code", "OK"), ("model", "simple"), ("outcome", "success"), ("version", "1")))  # fmt: skip
    bad = ("modelport_inference_requests_total",
           (("code", "INVALID_ARGUMENT"), ("model", "simple"), ("outcome", "failure"), ("version", "1")))  # fmt: skip
    assert samples[ok] == 3 and samples[bad] == 1
    histogram = (
        "modelport_inference_request_duration_seconds_count",
        (("model", "simple"), ("version", "1")),
    )
    assert samples[histogram] == 4
    assert any(name == "modelport_inference_batch_size_bucket" for name, _ in samples)
    assert any(name == "modelport_inference_in_flight" for name, _ in samples)


def test_sigterm_drains_in_flight_then_exits(
    served: tuple[subprocess.Popen[bytes], str, int],
) -> None:
    process, address, _ = served
    channel = grpc.insecure_channel(address)
    stub = pbg.GRPCInferenceServiceStub(channel)
    x = np.ones((1,), np.float32)
    with ThreadPoolExecutor(3) as pool:
        in_flight = [pool.submit(stub.ModelInfer, raw_request("slow", {"X": ("FP32", x)}), timeout=60)
                     for _ in range(3)]  # fmt: skip
        time.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as refused:
            pbg.GRPCInferenceServiceStub(grpc.insecure_channel(address)).ModelInfer(
                raw_request("slow", {"X": ("FP32", x)}), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        answers = [f.result() for f in in_flight]  # all in-flight requests finish
    assert all(a.model_name == "slow" for a in answers)
    assert process.wait(timeout=30) == 0
    assert time.monotonic() - started < 20
    logs = process.stdout.read().decode()  # type: ignore[union-attr]
    assert '"message": "received SIGTERM: draining"' in logs
