"""`serve inference --pool`: one replica serves 50 models of a real registry under a memory
budget, loading on first request and evicting least recently used, with no failed request;
the router places the registry's pooled models on pool replicas, spreads a hot one over
two, answers their metadata and follows alias moves to the version the alias names."""

from __future__ import annotations

import asyncio
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from modelport.client.registry import RegistryClient
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.proto.modelport.router.v1 import router_pb2, router_pb2_grpc
from modelport.router.app import RouterApp
from modelport.router.discovery import StaticDiscovery
from modelport.router.pool_routing import POOL_MODEL
from modelport.router.registry_policies import RegistryPolicySource
from modelport.router.replicas import Endpoint

from tests.inference.requests import output, raw_request
from tests.registry.registry_servers import ThreadedRegistry, registry_settings

MODELS = 50
WIDTH = 512  # a 512x512 FP32 layer: 1 MiB of weights per model
CONFIG = """
name: "{name}"
platform: "torch_export"
max_batch_size: 4
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {width} ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {width} ] }} ]
"""


def push_models(address: str, root: Path, count: int = MODELS) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(WIDTH, WIDTH, bias=False)
    batch = torch.export.Dim("batch", min=1, max=4)
    program = torch.export.export(layer, (torch.ones(2, WIDTH),), dynamic_shapes=({0: batch},))
    root.mkdir(parents=True)
    exported = root / "model.pt2"
    torch.export.save(program, str(exported))
    with RegistryClient(address) as client:
        for i in range(count):
            model_dir = root / f"m{i:02d}"
            (model_dir / "1").mkdir(parents=True)
            (model_dir / "config.pbtxt").write_text(CONFIG.format(name=f"m{i:02d}", width=WIDTH))
            shutil.copy(exported, model_dir / "1" / "model.pt2")
            client.push(model_dir, name=f"m{i:02d}", aliases=["production"])
            client.set_pool_placement(f"m{i:02d}", memory_bytes=WIDTH * WIDTH * 4)


async def test_one_pool_replica_serves_50_models_within_its_budget(
    tmp_path: Path, inference_server: Any
) -> None:
    registry = ThreadedRegistry(registry_settings(tmp_path))
    try:
        await asyncio.to_thread(push_models, registry.address, tmp_path / "src")
        app = await inference_server(
            None, pool=True, registry=registry.address, memory_budget_mb=6,
            cache_dir=tmp_path / "cache", torch_threads=1,
        )  # fmt: skip
        assert app.pool is not None
        cache = app.pool.cache
        charged: list[int] = []
        app.pool.listeners.append(lambda: charged.append(cache.charged_bytes))
        phases: set[str] = set()  # what the replica pushes to routers about its loads
        loads = app.manager.phases
        loads.listeners.append(lambda: phases.update(load.phase for load, _, _ in loads.now()))

        rng = random.Random(3)
        weights = [1 / (rank**1.1) for rank in range(1, MODELS + 1)]
        names = [f"m{i:02d}" for i in rng.choices(range(MODELS), weights=weights, k=250)]
        names += [f"m{i:02d}" for i in range(MODELS)]  # every model at least once
        x = np.ones((1, WIDTH), dtype=np.float32)
        sent = len(names)
        failures: Counter[str] = Counter()
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)

            async def client(queue: list[str]) -> None:
                while queue:
                    name = queue.pop()
                    try:
                        answer = await stub.ModelInfer(
                            raw_request(name, {"INPUT0": ("FP32", x)}), timeout=60
                        )
                        assert output(answer, "OUTPUT0", np.float32).shape == (1, WIDTH)
                    except grpc.aio.AioRpcError as exc:
                        failures[f"{name}: {exc.code().name} {exc.details()}"] += 1

            await asyncio.gather(*(client(names) for _ in range(8)))
            index = await stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True))
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await stub.ModelInfer(raw_request("nope", {"INPUT0": ("FP32", x)}), timeout=10)

        assert not failures, failures
        budget = 6 * 1024 * 1024
        assert max(charged) <= budget, "never over budget"
        stats = cache.stats
        assert stats.evictions > 0 and stats.hits > 0
        # One layer's weights are measured at load, not the archive size guessed before.
        sizes = {size for _, size, _ in cache.state().values()}
        assert sizes == {WIDTH * WIDTH * 4}
        assert 1 <= len(index.models) <= budget // (WIDTH * WIDTH * 4)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert phases == {"DOWNLOADING", "LOADING", "WARMING_UP"}
        assert not loads.now(), "no load left behind"
        print(f"\npool: {sent} requests over {MODELS} models, budget 6 MiB: "
              f"hits {stats.hits}, loads {stats.misses}, joins {stats.joins}, "
              f"evictions {stats.evictions}")  # fmt: skip
    finally:
        registry.stop()


async def test_the_router_places_models_on_warm_pool_replicas(
    tmp_path: Path, inference_server: Any
) -> None:
    registry = ThreadedRegistry(registry_settings(tmp_path))
    router: RouterApp | None = None
    try:
        await asyncio.to_thread(push_models, registry.address, tmp_path / "src", 8)
        pools = [
            await inference_server(
                None,
                pool=True,
                registry=registry.address,
                memory_budget_mb=6,
                cache_dir=tmp_path / f"cache{i}",
                torch_threads=1,
            )
            for i in range(2)
        ]
        endpoints = [Endpoint(POOL_MODEL, app.address) for app in pools]
        with RegistryClient(registry.address) as client:
            client.set_pool_placement("m07", pooled=False)  # only its own deployments serve it
        router = RouterApp(StaticDiscovery(endpoints), RegistryPolicySource(registry.address))
        await router.start()
        assert router.router.pool is not None

        async def until(what: str, condition: Any) -> None:
            deadline = asyncio.get_running_loop().time() + 20
            while not condition():
                assert asyncio.get_running_loop().time() < deadline, what
                await asyncio.sleep(0.05)

        await until("pool replicas never reported", lambda: len(router.placer.replicas) == 2)
        await until("no pool placements", lambda: router.router.pool.pooled)
        x = np.ones((1, WIDTH), dtype=np.float32)

        def loads_of(name: str) -> int:
            return sum(1 for app in pools if name in app.pool.cache.state())

        async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)

            async def infer(name: str) -> None:
                answer = await stub.ModelInfer(
                    raw_request(name, {"INPUT0": ("FP32", x)}), timeout=60
                )
                assert output(answer, "OUTPUT0", np.float32).shape == (1, WIDTH)

            # Concurrent first requests for one model: one load in the whole pool.
            await asyncio.gather(*(infer("m00") for _ in range(8)))
            assert loads_of("m00") == 1
            # Once it is warm there, every request for it goes there (hits).
            await asyncio.sleep(0.2)  # the replica's report of m00 READY arrives
            for _ in range(10):
                await infer("m00")
            assert loads_of("m00") == 1
            stats = router.placer.stats
            assert stats.misses["m00"] == 1 and stats.hits["m00"] >= 10
            # A hot model spreads: with its warm copy busy, the router has the other
            # replica load it too (the request still goes to the warm one) ...
            deadline = asyncio.get_running_loop().time() + 20
            while loads_of("m00") < 2:
                assert asyncio.get_running_loop().time() < deadline, "m00 never spread"
                await asyncio.gather(*(infer("m00") for _ in range(32)))
            assert stats.spreads["m00"] == 1 and stats.misses["m00"] == 1
            await until(
                "second copy unreported",
                lambda: all(
                    r.models.get("m00") is not None and r.models["m00"].state == "READY"
                    for r in router.placer.replicas.values()
                ),
            )
            # ... and then sends its requests to both copies.
            hits = [app.pool.cache.stats.hits for app in pools]
            await asyncio.gather(*(infer("m00") for _ in range(32)))
            assert all(a.pool.cache.stats.hits > h for a, h in zip(pools, hits, strict=True))
            # New models go where memory is free: both replicas take some.
            for i in range(1, 7):
                await infer(f"m{i:02d}")
                await asyncio.sleep(0.1)
            assert all(app.pool is not None and app.pool.cache.stats.misses >= 2 for app in pools)
            # A model the registry does not pool is no pool model.
            with pytest.raises(grpc.aio.AioRpcError) as unpooled:
                await infer("m07")
            assert unpooled.value.code() == grpc.StatusCode.NOT_FOUND
            # Metadata and config of pool models, through the router.
            metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name="m00"), timeout=30)
            assert metadata.name == "m00" and metadata.versions == ["1"]
            config = await stub.ModelConfig(pb.ModelConfigRequest(name="m03"), timeout=30)
            assert config.config.name == "m03" and config.config.max_batch_size == 4
            # The alias moves to version 2: requests reach version 2, loaded in place of 1.
            with RegistryClient(registry.address) as client:
                await asyncio.to_thread(
                    client.push, tmp_path / "src" / "m01", name="m01", aliases=["production"]
                )
            await until(
                "alias move unseen",
                lambda: router.router.planner.resolve("m01", "production") == "2",
            )
            await infer("m01")
            assert [
                app.pool.version("m01") for app in pools if "m01" in app.pool.cache.state()
            ] == [2]
            # Pushed after each load: m00 twice, m01-m06, m01 v2.
            reports = router.pool_watcher.reports
            await until("loads unreported", lambda: sum(r.loads for r in reports.values()) == 9)
            admin = router_pb2_grpc.RouterAdminStub(channel)
            routes = await admin.ListRoutes(router_pb2.ListRoutesRequest())
        by_name = {r.name: r for r in routes.models}
        assert [(c.state, c.version) for c in by_name["m00"].pool] == [("READY", 1)] * 2
        assert by_name["m00"].pool_hits >= 10 and by_name["m00"].pooled
        assert sorted(r.address for r in routes.pool_replicas) == sorted(a.address for a in pools)
        assert sum(r.loads for r in routes.pool_replicas) == 9
    finally:
        if router is not None:
            await router.stop(0)
        registry.stop()
