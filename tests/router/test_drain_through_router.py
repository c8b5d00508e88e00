"""SIGTERM of a replica under load, through real routers (static and DNS
discovery, and static with the fast path) in front of real `modelport serve inference` processes: readiness
goes false, the draining replica refuses new work with UNAVAILABLE (the routers
retry elsewhere), what it accepted completes, it exits 0, and the clients see
no failed request."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from modelport.proto.inference import grpc_service_pb2_grpc as pbg

from tests.inference.requests import raw_request
from tests.inference.test_entrypoint import SLOW_CONFIG as CONFIG
from tests.inference.test_entrypoint import free_port

SERVE = [sys.executable, "-m", "modelport.cli", "serve"]


class Busy(torch.nn.Module):
    """Some milliseconds of work per call, so requests are in flight at the signal."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        work = torch.linalg.matrix_exp(torch.full((64, 64), 0.001))
        return x + work.sum() * 0


def start_replica(repo: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MODELPORT_MODEL_REPOSITORY": str(repo), "MODELPORT_GRACE_SECONDS": "20"}
    args = ["inference", "--host", "127.0.0.1", "--grpc-port", str(port), "--metrics-port", "-1"]
    return subprocess.Popen([*SERVE, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def start_router(*discovery: str) -> subprocess.Popen[str]:
    args = ["router", "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1",
            "--http-port", "-1", *discovery]  # fmt: skip
    return subprocess.Popen([*SERVE, *args], stderr=subprocess.PIPE, text=True)


def router_address(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"gRPC listening on 127\.0\.0\.1:(\d+)", process.stderr.readline())
        if found:
            # Keep reading its log so the router never blocks on a full pipe.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return f"127.0.0.1:{found.group(1)}"
    raise AssertionError("router did not start")


def health(address: str, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
    try:
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1).status
    except grpc.RpcError:
        return -1


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_for(address: str, service: str, status: int, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while health(address, service) != status:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def request() -> object:
    return raw_request("busy", {"X": ("FP32", np.ones((1,), np.float32))})


def test_sigterm_of_a_replica_under_load_fails_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    (repo / "busy" / "1").mkdir(parents=True)
    (repo / "busy" / "config.pbtxt").write_text(CONFIG)
    torch.jit.script(Busy()).save(str(repo / "busy" / "1" / "model.pt"))
    ports = {name: free_port() for name in "ab"}
    replicas = {name: start_replica(repo, port) for name, port in ports.items()}
    a, b = (f"127.0.0.1:{ports[n]}" for n in "ab")
    # Two routers over the same two replicas: one told their addresses, one
    # resolving them by name (each name one replica: localhost has one address here).
    static = start_router("--endpoint", f"busy={a}", "--endpoint", f"busy={b}")
    dns = start_router("--discovery", "dns", "--dns-name", f"busy=localhost:{ports['a']}",
                       "--dns-name", f"busy=localhost:{ports['b']}")  # fmt: skip
    # And one with the fast path in front (the Go modelport-fastpath forwards, retries).
    fast = start_router("--endpoint", f"busy={a}", "--endpoint", f"busy={b}", "--fast-path", "on")
    processes: list[subprocess.Popen] = [*replicas.values(), static, dns, fast]  # type: ignore[type-arg]
    try:
        routers = {"static": router_address(static), "dns": router_address(dns),
                   "fast path": router_address(fast)}  # fmt: skip
        deadline = time.monotonic() + 90
        while any(health(x) != SERVING for x in (a, b)):
            assert time.monotonic() < deadline, "replicas did not become ready"
            assert all(p.poll() is None for p in replicas.values())
            time.sleep(0.2)
        for address in routers.values():  # both routers route to both of their replicas
            assert wait_for(address, "busy", SERVING), "per-model health"
            stub = pbg.GRPCInferenceServiceStub(grpc.insecure_channel(address))
            for _ in range(200):
                try:
                    stub.ModelInfer(request(), timeout=5)
                    break
                except grpc.RpcError:
                    time.sleep(0.05)

        outcomes: dict[str, Counter[str]] = {name: Counter() for name in routers}
        stop = threading.Event()

        def load(name: str) -> None:
            stub = pbg.GRPCInferenceServiceStub(grpc.insecure_channel(routers[name]))
            while not stop.is_set():
                try:
                    stub.ModelInfer(request(), timeout=30)
                    outcomes[name]["OK"] += 1
                except grpc.RpcError as exc:
                    outcomes[name][f"{exc.code().name}: {exc.details()}"] += 1

        clients = [threading.Thread(target=load, args=(n,)) for n in routers for _ in range(3)]
        for client in clients:
            client.start()
        time.sleep(1.5)
        before = {name: counts["OK"] for name, counts in outcomes.items()}
        replicas["a"].send_signal(signal.SIGTERM)
        # While it drains, the replica is not ready and refuses new work itself.
        direct = pbg.GRPCInferenceServiceStub(grpc.insecure_channel(a))
        refused = None
        while replicas["a"].poll() is None and refused is None:
            assert health(a) != SERVING
            try:
                direct.ModelInfer(request(), timeout=5)
            except grpc.RpcError as exc:
                refused = exc.code()
        assert refused in (None, grpc.StatusCode.UNAVAILABLE)
        assert replicas["a"].wait(30) == 0, "the drained replica exits 0"
        time.sleep(1.5)  # load goes on against the remaining replicas
        for address in routers.values():
            assert health(address, "busy") == SERVING, "one replica still serves the model"
        stop.set()
        for client in clients:
            client.join(60)
        # The last replica gone, the routers say the model is not served.
        replicas["b"].send_signal(signal.SIGTERM)
        assert replicas["b"].wait(30) == 0
        for address in routers.values():
            assert wait_for(address, "busy", NOT_SERVING)
            assert health(address) == SERVING  # the router itself is fine
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for name, counts in outcomes.items():
        assert set(counts) == {"OK"}, f"{name} discovery: failed requests {dict(counts)}"
        assert counts["OK"] > before[name], f"{name}: traffic moved to the other replica"
