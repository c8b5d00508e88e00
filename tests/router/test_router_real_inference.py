"""The router in front of real modelport inference services on loopback.

The repository holds the sample models plus what the policies need: `simple`
in versions 1 and 2 (a canary), and `mlp_b`, an MLP with other weights and
the same signature as `mlp` (an ensemble member).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from modelport.inference.samples import mlp_module
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.router.app import RouterApp
from modelport.router.discovery import DnsDiscovery, DnsTarget, StaticDiscovery
from modelport.router.policies import MemberRef, RoutingState, TrafficPolicy
from modelport.router.replicas import Endpoint

from tests.inference.requests import mlp_request, output
from tests.inference.requests import simple_request as inference_simple_request

SERVICES = Path(__file__).resolve().parents[2] / "services"
ALIASES = {"simple": {"production": "1", "canary": "2"}}


@pytest.fixture(scope="module")
def router_repo(sample_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("router") / "models"
    shutil.copytree(sample_repo, repo)
    shutil.copytree(repo / "simple" / "1", repo / "simple" / "2")
    config = repo / "simple" / "config.pbtxt"
    config.write_text(config.read_text() + "version_policy: { all { } }\n")
    (repo / "mlp_b" / "1").mkdir(parents=True)
    mlp_config = (repo / "mlp" / "config.pbtxt").read_text()
    (repo / "mlp_b" / "config.pbtxt").write_text(
        mlp_config.replace('name: "mlp"', 'name: "mlp_b"').replace(
            '"torch_export"', '"pytorch_libtorch"'
        )
    )
    torch.manual_seed(1)
    other = mlp_module()
    for parameter in other.parameters():  # other weights than `mlp`'s seed-0 ones
        torch.nn.init.normal_(parameter, std=0.05)
    torch.jit.script(other).save(str(repo / "mlp_b" / "1" / "model.pt"))
    return repo


def request(rows: int = 1, version: str = "") -> pb.ModelInferRequest:
    a = np.arange(16 * rows, dtype=np.int32).reshape(rows, 16)
    return inference_simple_request(a, np.ones_like(a), model_version=version, id="r")


@pytest.fixture
async def two_replicas(inference_server, router_repo):  # type: ignore[no-untyped-def]
    return [await inference_server(router_repo) for _ in range(2)]


@pytest.fixture
async def routed(
    two_replicas, policies
) -> AsyncIterator[tuple[RouterApp, pb_grpc.GRPCInferenceServiceStub]]:  # type: ignore[no-untyped-def]
    endpoints = [
        Endpoint(model, r.address) for r in two_replicas for model in ("simple", "mlp", "mlp_b")
    ]
    # Over real replicas, forward on one stream per replica (the unary path is
    # what the other tests here use).
    app = RouterApp(StaticDiscovery(endpoints), policies, index_interval=0.5, multiplex=True)
    await app.start()
    try:
        deadline = time.monotonic() + 30
        while len(app.table.candidates("mlp_b", "")) < 2:
            assert time.monotonic() < deadline, "replicas never became ready"
            await asyncio.sleep(0.05)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield app, pb_grpc.GRPCInferenceServiceStub(channel)
    finally:
        await app.stop(0)


async def served_counts(replicas, stub_for, model: str) -> list[dict[str, int]]:  # type: ignore[no-untyped-def]
    """Per replica: version -> requests it answered, from its own statistics."""
    counts = []
    for replica in replicas:
        stats = await stub_for(replica.address).ModelStatistics(
            pb.ModelStatisticsRequest(name=model), timeout=5
        )
        counts.append({s.version: s.inference_stats.success.count for s in stats.model_stats})
    return counts


async def test_balances_and_answers_like_the_replicas(two_replicas, routed, stub_for) -> None:  # type: ignore[no-untyped-def]
    app, stub = routed
    x = np.random.default_rng(0).normal(size=(2, 256)).astype(np.float32)
    direct = await stub_for(two_replicas[0].address).ModelInfer(mlp_request(x), timeout=10)
    answers = await asyncio.gather(
        *(stub.ModelInfer(mlp_request(x), timeout=10) for _ in range(60))
    )
    for answer in answers:
        np.testing.assert_allclose(
            output(answer, "OUTPUT", np.float32),
            output(direct, "OUTPUT", np.float32),
            rtol=1e-4,
            atol=1e-6,
        )
    per_replica = [sum(c.values()) for c in await served_counts(two_replicas, stub_for, "mlp")]
    assert min(per_replica) >= 10, per_replica  # per request, not per connection
    for replica in app.table.replicas.values():  # forwarded over each replica's stream
        assert replica.handle.mux.answered and not replica.handle.mux.unsupported
    index = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=5)
    assert {(m.name, m.version) for m in index.models} >= {
        ("simple", "1"),
        ("simple", "2"),
        ("mlp", "1"),
        ("mlp_b", "1"),
    }
    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="mlp"), timeout=5)
    assert [t.name for t in meta.inputs] == ["INPUT"]
    config = await stub.ModelConfig(pb.ModelConfigRequest(name="simple", version="2"), timeout=5)
    assert config.config.max_batch_size == 8
    # A replica's own error reaches the caller with its code and message.
    bad = request()
    bad.inputs[0].name = "WRONG"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(bad, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "simple" in info.value.details()


async def test_canary_split_over_real_replicas(two_replicas, routed, policies) -> None:  # type: ignore[no-untyped-def]
    _, stub = routed
    policies.set(
        RoutingState(
            policies={"simple": TrafficPolicy(split=(("production", 90), ("canary", 10)))},
            aliases=ALIASES,
        )
    )
    versions: Counter[str] = Counter()
    for _ in range(40):
        answers = await asyncio.gather(*(stub.ModelInfer(request(), timeout=10) for _ in range(50)))
        versions.update(a.model_version for a in answers)
    assert sum(versions.values()) == 2000
    assert abs(versions["2"] / 2000 - 0.10) <= 0.05, versions
    assert abs(versions["1"] / 2000 - 0.90) <= 0.05, versions


async def test_shadow_copy_goes_to_the_shadow_alias(
    two_replicas, routed, policies, stub_for
) -> None:  # type: ignore[no-untyped-def]
    _, stub = routed
    policies.set(
        RoutingState(policies={"simple": TrafficPolicy(shadow_alias="canary")}, aliases=ALIASES)
    )
    for _ in range(15):
        assert (await stub.ModelInfer(request(), timeout=5)).model_version == "1"
    deadline = time.monotonic() + 5
    while True:
        counts = await served_counts(two_replicas, stub_for, "simple")
        if sum(c.get("2", 0) for c in counts) == 15 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert sum(c.get("1", 0) for c in counts) == 15
    assert sum(c.get("2", 0) for c in counts) == 15


async def test_ensemble_is_the_mean_of_real_members(two_replicas, routed, policies) -> None:  # type: ignore[no-untyped-def]
    _, stub = routed
    members = (MemberRef("mlp"), MemberRef("mlp_b", "1"))
    policies.set(RoutingState(policies={"mlp": TrafficPolicy(ensemble=members)}))
    x = np.random.default_rng(2).normal(size=(3, 256)).astype(np.float32)
    mean = output(await stub.ModelInfer(mlp_request(x), timeout=10), "OUTPUT", np.float32)
    one = output(
        await stub.ModelInfer(mlp_request(x, model_version="1"), timeout=10), "OUTPUT", np.float32
    )
    other_request = mlp_request(x)
    other_request.model_name = "mlp_b"
    other = output(await stub.ModelInfer(other_request, timeout=10), "OUTPUT", np.float32)
    assert not np.allclose(one, other)  # the members really differ
    np.testing.assert_allclose(mean, (one + other) / 2, rtol=1e-5, atol=1e-6)


async def test_scatter_keeps_row_order_across_real_replicas(
    two_replicas, routed, policies, stub_for
) -> None:  # type: ignore[no-untyped-def]
    _, stub = routed
    x = np.random.default_rng(3).normal(size=(11, 256)).astype(np.float32)
    whole = output(
        await stub_for(two_replicas[0].address).ModelInfer(mlp_request(x), timeout=10),
        "OUTPUT",
        np.float32,
    )
    policies.set(RoutingState(policies={"mlp": TrafficPolicy(scatter=True)}))
    before = [sum(c.values()) for c in await served_counts(two_replicas, stub_for, "mlp")]
    gathered = output(await stub.ModelInfer(mlp_request(x), timeout=10), "OUTPUT", np.float32)
    after = [sum(c.values()) for c in await served_counts(two_replicas, stub_for, "mlp")]
    np.testing.assert_allclose(gathered, whole, rtol=1e-5, atol=1e-6)
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1]  # one slice each


async def test_dns_discovery_over_real_replicas(inference_server, router_repo) -> None:  # type: ignore[no-untyped-def]
    """A stand-in resolver plays the headless Service: its answer grows by one pod."""
    first = await inference_server(router_repo)
    second = await inference_server(router_repo)
    answer = [first.address]

    async def resolve(name: str, port: int) -> list[str]:
        assert name == "simple.models.svc.cluster.local"
        return list(answer)

    target = DnsTarget("simple", "simple.models.svc.cluster.local", 8001)
    app = RouterApp(DnsDiscovery([target], interval=0.05, resolve=resolve), index_interval=0.5)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            deadline = time.monotonic() + 10
            while not app.table.candidates("simple", "1"):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await stub.ModelInfer(request(), timeout=5)
            answer.append(second.address)
            while len(app.table.candidates("simple", "1")) < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await asyncio.gather(*(stub.ModelInfer(request(), timeout=10) for _ in range(40)))
        assert app.table.replicas[second.address].picks >= 10
    finally:
        await app.stop(0)


@pytest.fixture
def inference_process(router_repo: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`modelport serve inference` as its own process, serving `simple` only."""
    env = {**os.environ, "PYTHONPATH": str(SERVICES)}
    command = [sys.executable, "-m", "modelport.cli", "serve", "inference", "--model-repository",
               str(router_repo), "--model-control-mode", "explicit", "--load-model", "simple",
               "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1",
               "--torch-threads", "1"]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stderr is not None
        address = ""
        while not address:
            line = process.stderr.readline()
            assert line, "inference service exited"
            found = re.search(r"gRPC listening on (127\.0\.0\.1:\d+)", line)
            address = found.group(1) if found else ""
        yield process, address
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


async def test_kill_9_of_a_real_replica_under_load(
    inference_process, two_replicas, policies
) -> None:  # type: ignore[no-untyped-def]
    victim, victim_address = inference_process
    addresses = [victim_address] + [r.address for r in two_replicas]
    app = RouterApp(StaticDiscovery([Endpoint("simple", a) for a in addresses]), policies)
    await app.start()
    try:
        deadline = time.monotonic() + 60
        while len(app.table.candidates("simple", "1")) < 3:
            assert time.monotonic() < deadline, "replicas never became ready"
            await asyncio.sleep(0.05)
        failures: list[float] = []
        successes = 0
        stop = asyncio.Event()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)

            async def worker() -> None:
                nonlocal successes
                while not stop.is_set():
                    try:
                        await stub.ModelInfer(request(), timeout=10)
                        successes += 1
                    except grpc.aio.AioRpcError:
                        failures.append(time.monotonic())

            workers = [asyncio.create_task(worker()) for _ in range(6)]
            await asyncio.sleep(0.5)
            assert app.table.replicas[victim_address].picks > 0
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*workers)
        # Only requests already on the victim may fail; later ones go elsewhere.
        assert len(failures) <= len(workers)
        assert all(at - killed_at < 0.5 for at in failures), failures
        assert successes > 50
        assert app.router.stats.ejections[("simple", victim_address)] >= 1
    finally:
        await app.stop(0)
