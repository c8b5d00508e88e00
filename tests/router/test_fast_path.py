"""The router's fast path (`--fast-path`, services/fastpath) through the front door.

One stack for the module: two `modelport serve router` processes over the same
replicas and the same registry, one with the fast path on and one without,
so every answer the fast path relays can be compared with Python's own. The
replicas are toy OIP servers (tests/support/toy_oip_server.py): one in its own
process, one on a loop in this process (so the test sees the metadata it got),
and a third, started and killed by one test. The registry is its stand-in.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from modelport.auth.api_keys import new_key
from modelport.common.fastpath_process import find_binary
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pbg
from modelport.proto.modelport.router.v1 import router_pb2 as rpb
from modelport.proto.modelport.router.v1 import router_pb2_grpc as rpb_grpc
from modelport.router.app import build
from modelport.router.settings import RouterSettings
from prometheus_client.parser import text_string_to_metric_families

from tests.inference.test_entrypoint import free_port
from tests.router.registry_stand_in import RegistryStandIn
from tests.router.router_helpers import simple_request
from tests.router.test_router_access import POLICY
from tests.support.toy_oip_server import ToyServer

SERVE = [sys.executable, "-m", "modelport.cli", "serve"]
INFER = "/inference.GRPCInferenceService/ModelInfer"
T = TypeVar("T")


class Loop:
    """An event loop in a thread, for the in-process replica and the registry."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def toy_process(*models: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.toy_oip_server", *models],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def start_router(
    endpoints: Path, registry: str, fast_path: str, metrics: int
) -> subprocess.Popen[str]:
    args = ["router", "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", str(metrics),
            "--http-port", "-1", "--endpoints-file", str(endpoints), "--registry", registry,
            "--index-interval", "0.2", "--fast-path", fast_path]  # fmt: skip
    return subprocess.Popen([*SERVE, *args], stderr=subprocess.PIPE, text=True)


def router_address(process: subprocess.Popen[str]) -> tuple[str, list[str]]:
    """The public address from the router's log, and the log lines read so far."""
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines.append(process.stderr.readline())
        found = re.search(r"gRPC listening on 127\.0\.0\.1:(\d+)", lines[-1])
        if found:
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return f"127.0.0.1:{found.group(1)}", lines
        assert process.poll() is None, "".join(lines)
    raise AssertionError("router did not start:\n" + "".join(lines))


@dataclass
class Stack:
    fast: str  # the router with the fast path
    plain: str  # the same router without it
    metrics: int  # the fast router's /metrics port
    replicas: list[str]
    in_process: ToyServer
    registry: RegistryStandIn
    loop: Loop
    endpoints: Path
    fast_pid: int = 0  # the fast router's (Python) process

    def stub(self, address: str) -> pbg.GRPCInferenceServiceStub:
        return pbg.GRPCInferenceServiceStub(grpc.insecure_channel(address))

    def write_endpoints(self, replicas: list[str]) -> None:
        lines = [f"{m}={r}\n" for r in replicas for m in ("simple", "mlp")]
        self.endpoints.with_suffix(".tmp").write_text("".join(lines))
        self.endpoints.with_suffix(".tmp").replace(self.endpoints)

    def fast_path_counts(self) -> Counter[tuple[str, str, str]]:
        """(metric, model, code) -> value, from the fast router's /metrics."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics").read().decode()
        counts: Counter[tuple[str, str, str]] = Counter()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                counts[(sample.name, labels.get("model", ""), labels.get("code", ""))] += int(
                    sample.value
                )
        return counts


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    assert find_binary() is not None, "modelport-fastpath is not built: run `make fastpath`"
    folder = tmp_path_factory.mktemp("fastpath")
    loop = Loop()
    in_process = ToyServer({"simple": ["1"], "mlp": ["1", "2"]})
    registry = RegistryStandIn()
    processes: list[subprocess.Popen[str]] = []
    try:
        own = loop.run(in_process.start())
        registry_address = loop.run(registry.start())
        loop.run(registry.set_alias("mlp", "production", 1))
        process, other = toy_process("simple:1", "mlp:1,2")
        processes.append(process)
        endpoints = folder / "endpoints"
        metrics = free_port()
        stack = Stack("", "", metrics, [other, own], in_process, registry, loop, endpoints)
        stack.write_endpoints(stack.replicas)
        fast = start_router(endpoints, registry_address, "on", metrics)
        plain = start_router(endpoints, registry_address, "off", -1)
        processes += [fast, plain]
        stack.fast_pid = fast.pid
        stack.fast, _ = router_address(fast)
        stack.plain, _ = router_address(plain)
        for address in (stack.fast, stack.plain):  # both replicas indexed, the alias known
            stub, deadline = stack.stub(address), time.monotonic() + 30
            while True:
                try:
                    admin = rpb_grpc.RouterAdminStub(grpc.insecure_channel(address))
                    routes = admin.ListRoutes(rpb.ListRoutesRequest(model_name="mlp"), timeout=5)
                    served = [r for r in routes.models[0].replicas if r.versions == ["1", "2"]]
                    simple = admin.ListRoutes(
                        rpb.ListRoutesRequest(model_name="simple"), timeout=5
                    ).models[0]  # the tests spread simple's calls over both replicas too
                    if (
                        len(served) == 2
                        and routes.models[0].aliases["production"] == "1"
                        and sum(r.versions == ["1"] and r.ready for r in simple.replicas) == 2
                    ):
                        stub.ModelInfer(mlp_request(), timeout=5)
                        stub.ModelInfer(simple_request(), timeout=5)
                        break
                except (grpc.RpcError, IndexError):
                    pass
                assert time.monotonic() < deadline, "the routers never saw both replicas"
                time.sleep(0.1)
        yield stack
    finally:
        for process in processes:
            process.kill()
            process.wait()
        loop.run(in_process.stop())
        loop.run(registry.stop())
        loop.close()


def mlp_request(version: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="mlp", model_version=version, id="m")
    request.inputs.add(name="INPUT", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
    return request


def mlp_factor(answer: pb.ModelInferResponse) -> float:
    """The toy mlp answers INPUT * version: which version answered."""
    return float(np.frombuffer(answer.raw_output_contents[0], np.float32)[0])


def served_by(stack: Stack, replica: str) -> int:
    stats = stack.stub(replica).ModelStatistics(pb.ModelStatisticsRequest(), timeout=5)
    return int(stats.model_stats[0].inference_count)


def failure(call: Any) -> tuple[str, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


def load(stub: Any, request: Any, seconds: float, results: list[Any], workers: int = 3) -> None:
    """`workers` callers in a loop for `seconds`; (time, answer or error) in `results`."""
    until = time.monotonic() + seconds

    def run() -> None:
        while time.monotonic() < until:
            try:
                results.append((time.monotonic(), stub.ModelInfer(request, timeout=10)))
            except grpc.RpcError as exc:
                results.append((time.monotonic(), f"{exc.code().name}: {exc.details()}"))

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_model_infer_is_forwarded_to_both_replicas_and_counted(stack: Stack) -> None:
    stub = stack.stub(stack.fast)
    before = [served_by(stack, r) for r in stack.replicas]
    counted_before = stack.fast_path_counts()
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for _ in range(60):
        answer = stub.ModelInfer(simple_request(), timeout=5, metadata=[("traceparent", trace)])
        assert answer.model_name == "simple" and answer.model_version == "1"
        assert np.frombuffer(answer.raw_output_contents[0], np.int32)[1] == 2  # 1 + 1
    spread = [served_by(stack, r) - b for r, b in zip(stack.replicas, before, strict=True)]
    assert sum(spread) == 60 and min(spread) >= 10, spread
    assert stack.in_process.last_metadata.get("traceparent") == trace  # trace context carried
    deadline = time.monotonic() + 5  # reports come every 0.5 s
    key = ("modelport_router_fast_path_requests_total", "simple", "OK")
    while stack.fast_path_counts()[key] - counted_before[key] < 60:
        assert time.monotonic() < deadline, "the fast path's requests never reached /metrics"
        time.sleep(0.1)
    counts = stack.fast_path_counts()
    total = ("modelport_router_requests_total", "simple", "OK")
    assert counts[total] - counted_before[total] >= 60
    # `modelport routes` counts them too: picks of each replica.
    admin = rpb_grpc.RouterAdminStub(grpc.insecure_channel(stack.fast))
    route = admin.ListRoutes(rpb.ListRoutesRequest(model_name="simple"), timeout=5).models[0]
    assert sum(r.picks for r in route.replicas) >= 60 and all(r.picks for r in route.replicas)


def test_every_other_call_is_relayed_and_answered_as_python_answers(stack: Stack) -> None:
    fast, plain = stack.stub(stack.fast), stack.stub(stack.plain)
    for method, request in (
        ("ModelMetadata", pb.ModelMetadataRequest(name="simple")),
        ("ModelConfig", pb.ModelConfigRequest(name="mlp")),
        ("ModelReady", pb.ModelReadyRequest(name="mlp", version="2")),
        ("ServerMetadata", pb.ServerMetadataRequest()),
        ("RepositoryIndex", pb.RepositoryIndexRequest()),
    ):
        ours, theirs = getattr(fast, method)(request, timeout=5), getattr(plain, method)(request)
        if method == "ModelMetadata":  # the toy names the replica that answered
            assert {ours.platform, theirs.platform} <= set(stack.replicas)
            ours.platform = theirs.platform = ""
        assert ours == theirs, method
    requests = [simple_request(), mlp_request("2"), simple_request(model="nope")]
    for index, request in enumerate(requests):
        request.id = str(index)
    streamed = [list(stub.ModelStreamInfer(iter(requests), timeout=5)) for stub in (fast, plain)]
    assert sorted(streamed[0], key=lambda a: a.infer_response.id) == sorted(
        streamed[1], key=lambda a: a.infer_response.id
    )
    assert sum(bool(a.error_message) for a in streamed[0]) == 1
    for address in (stack.fast, stack.plain):
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
        check = health.Check(health_pb2.HealthCheckRequest(service="mlp"), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.SERVING


def test_refusals_have_the_status_and_words_of_python(stack: Stack) -> None:
    wrong_inputs = simple_request()
    wrong_inputs.inputs[0].name = "WRONG"
    cases = [
        simple_request(model="nope"),  # unknown model
        simple_request(version="7"),  # a version nothing serves
        simple_request(version="canary"),  # an unknown alias
        simple_request(model=""),  # no model
        wrong_inputs,  # the replica's own refusal, passed on
    ]
    fast, plain = stack.stub(stack.fast), stack.stub(stack.plain)
    for request in cases:
        ours = failure(lambda: fast.ModelInfer(request, timeout=5))  # noqa: B023
        assert ours[0] != "OK" and ours == failure(lambda: plain.ModelInfer(request, timeout=5))  # noqa: B023
    garbage = b"\x0a\xff"  # a length past the end: not a ModelInferRequest
    refused = []
    for address in (stack.fast, stack.plain):
        call = grpc.insecure_channel(address).unary_unary(INFER)
        refused.append(failure(lambda: call(garbage, timeout=5)))  # noqa: B023
    assert refused[0][0] == "INVALID_ARGUMENT" and refused[0] == refused[1]


def test_requests_of_a_sequence_are_left_to_python(stack: Stack) -> None:
    """Python pins a sequence to one replica (rendezvous hashing): the fast path relays."""
    request = simple_request()
    request.parameters["sequence_id"].int64_param = 42
    fast = ("modelport_router_fast_path_requests_total", "simple", "OK")
    total = ("modelport_router_requests_total", "simple", "OK")
    before, served = stack.fast_path_counts(), [served_by(stack, r) for r in stack.replicas]
    for _ in range(8):
        stack.stub(stack.fast).ModelInfer(request, timeout=5)
    time.sleep(0.7)  # a report of the fast path would have come
    after = stack.fast_path_counts()
    assert after[fast] == before[fast] and after[total] == before[total] + 8
    spread = sorted(served_by(stack, r) - n for r, n in zip(stack.replicas, served, strict=True))
    assert spread == [0, 8]  # all on the replica holding the sequence


def test_the_callers_deadline_holds_on_the_fast_path(stack: Stack) -> None:
    request = simple_request()
    request.parameters["sleep_ms"].int64_param = 3000
    started = time.monotonic()
    code, _ = failure(lambda: stack.stub(stack.fast).ModelInfer(request, timeout=0.3))
    assert code == "DEADLINE_EXCEEDED" and time.monotonic() - started < 2
    deadline = time.monotonic() + 5
    key = ("modelport_router_fast_path_requests_total", "simple", "DEADLINE_EXCEEDED")
    while stack.fast_path_counts()[key] < 1:
        assert time.monotonic() < deadline, "the deadline was not counted as the fast path's"
        time.sleep(0.1)


def test_alias_move_under_load_drops_nothing(stack: Stack) -> None:
    results: list[Any] = []
    loader = threading.Thread(
        target=load, args=(stack.stub(stack.fast), mlp_request(), 2.0, results)
    )
    loader.start()
    time.sleep(0.5)
    moved = time.monotonic()
    stack.loop.run(stack.registry.set_alias("mlp", "production", 2))
    loader.join()
    try:
        errors = [r for _, r in results if isinstance(r, str)]
        assert not errors and len(results) > 30, (errors[:3], len(results))
        factors = [(t, mlp_factor(r)) for t, r in results]
        assert all(f == 1.0 for t, f in factors if t < moved)
        assert all(f == 2.0 for t, f in factors if t > moved + 1.0)  # the move took
    finally:
        stack.loop.run(stack.registry.set_alias("mlp", "production", 1))


def test_a_replica_killed_under_load_fails_no_request(stack: Stack) -> None:
    process, third = toy_process("simple:1", "mlp:1,2")
    try:
        stack.write_endpoints([*stack.replicas, third])
        stub, deadline = stack.stub(stack.fast), time.monotonic() + 10
        while served_by(stack, third) < 3:  # the fast path sends to it
            stub.ModelInfer(simple_request(), timeout=5)
            assert time.monotonic() < deadline, "the third replica never got requests"
        results: list[Any] = []
        loader = threading.Thread(target=load, args=(stub, simple_request(), 1.2, results))
        loader.start()
        time.sleep(0.3)
        process.kill()
        loader.join()
        errors = [r for _, r in results if isinstance(r, str)]
        assert not errors and len(results) > 30, (errors[:3], len(results))
    finally:
        process.kill()
        process.wait()
        stack.write_endpoints(stack.replicas)


def test_the_go_process_killed_is_started_again_on_the_same_port(stack: Stack) -> None:
    (go,) = (
        int(child)
        for task in os.listdir(f"/proc/{stack.fast_pid}/task")
        for child in Path(f"/proc/{stack.fast_pid}/task/{task}/children").read_text().split()
    )
    os.kill(go, signal.SIGKILL)
    stub, deadline = stack.stub(stack.fast), time.monotonic() + 10
    while failure(lambda: stub.ModelInfer(simple_request(), timeout=1))[0] != "OK":
        assert time.monotonic() < deadline, "the fast path did not come back"
        time.sleep(0.05)
    before = stack.fast_path_counts()[("modelport_router_fast_path_requests_total", "simple", "OK")]
    for _ in range(5):  # forwarded by the new process: it has the routes
        stub.ModelInfer(simple_request(), timeout=5)
    deadline = time.monotonic() + 5
    key = ("modelport_router_fast_path_requests_total", "simple", "OK")
    while stack.fast_path_counts()[key] < before + 5:
        assert time.monotonic() < deadline, "the restarted fast path does not forward"
        time.sleep(0.1)


def test_on_without_the_binary_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    args = ["router", "--grpc-port", "0", "--metrics-port", "-1", "--http-port", "-1",
            "--endpoint", "simple=127.0.0.1:1", "--fast-path", "on",
            "--fast-path-binary", str(tmp_path / "missing")]  # fmt: skip
    done = subprocess.run([*SERVE, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--fast-path on needs the modelport-fastpath binary" in done.stderr
    assert "make fastpath" in done.stderr and "Traceback" not in done.stderr


async def test_auto_uses_the_fast_path_only_where_nothing_needs_python(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = {"host": "127.0.0.1", "grpc_port": 0, "metrics_port": -1, "http_port": -1,
            "endpoints": ("simple=127.0.0.1:1",), "fast_path": "auto"}  # fmt: skip
    caplog.set_level(logging.INFO, logger="modelport.router.app")
    assert build(RouterSettings(**base)).fastpath is not None
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    key = new_key("team-a")[1]
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"keys": [key.to_yaml_item()]}))
    secured = RouterSettings(
        **base,
        auth_policy_file=tmp_path / "policy.yaml",
        api_keys_file=tmp_path / "keys.yaml",
    )
    assert build(secured).fastpath is None
    said = [r.getMessage() for r in caplog.records if "fast path" in r.getMessage()]
    assert said[-1] == "fast path off: --fast-path auto: access control is configured " \
        "(identities, policies and quotas are Python's)"  # fmt: skip
