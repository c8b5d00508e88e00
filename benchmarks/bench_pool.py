"""Hit rate vs memory budget on the real stack: a registry holding 50 pooled models, one
`serve inference --pool` replica and the router in front of it, Zipf requests.

    .venv/bin/python benchmarks/bench_pool.py [--requests 400] [--budgets 10,25,50,100]

Where `bench_elastic.py` part 1 drives the cache's policy with simulated loads, this
sends real requests (`ModelInfer` through the router) to real torch.export models of
five sizes (0.25 to 2.25 MiB of weights, ten models each) that the replica downloads
from the registry, loads and evicts under its budget; the hit rate, loads and
evictions are the replica's own counters, the latencies what the caller saw. Each
budget (a percentage of all models' bytes) starts a fresh replica and router; the
artifacts stay in one disk cache, so a miss is a load, not a download. Bounded: each
budget stops after `--requests` requests or `--seconds`, whichever comes first.
Loads are CPU-bound: the latencies (not the hit rates) need a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

from modelport.client.registry import RegistryClient  # noqa: E402
from modelport.inference.app import InferenceApp  # noqa: E402
from modelport.inference.settings import InferenceSettings  # noqa: E402
from modelport.proto.inference import grpc_service_pb2 as pb  # noqa: E402
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc  # noqa: E402
from modelport.registry.server import RegistryServer  # noqa: E402
from modelport.registry.settings import RegistrySettings  # noqa: E402
from modelport.router.app import RouterApp  # noqa: E402
from modelport.router.discovery import StaticDiscovery  # noqa: E402
from modelport.router.pool_routing import POOL_MODEL  # noqa: E402
from modelport.router.registry_policies import RegistryPolicySource  # noqa: E402
from modelport.router.replicas import Endpoint  # noqa: E402

MODELS = 50
WIDTHS = (256, 384, 512, 640, 768)  # one Linear(width, width): 0.25 to 2.25 MiB of FP32
MIB = 1 << 20
CONFIG = """
name: "{name}"
platform: "torch_export"
max_batch_size: 4
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {width} ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {width} ] }} ]
"""


def name_of(i: int) -> str:
    return f"m{i:02d}"


def width_of(i: int) -> int:
    return WIDTHS[i % len(WIDTHS)]


def push_models(address: str, root: Path) -> int:
    """Push the 50 models, pooled with their weights' size as estimate; total bytes."""
    import shutil

    import torch

    torch.manual_seed(0)
    programs: dict[int, Path] = {}
    batch = torch.export.Dim("batch", min=1, max=4)
    for width in WIDTHS:
        layer = torch.nn.Linear(width, width, bias=False)
        program = torch.export.export(layer, (torch.ones(2, width),), dynamic_shapes=({0: batch},))
        programs[width] = root / f"w{width}.pt2"
        torch.export.save(program, str(programs[width]))
    total = 0
    with RegistryClient(address) as client:
        for i in range(MODELS):
            width, model_dir = width_of(i), root / name_of(i)
            (model_dir / "1").mkdir(parents=True)
            (model_dir / "config.pbtxt").write_text(CONFIG.format(name=name_of(i), width=width))
            shutil.copy(programs[width], model_dir / "1" / "model.pt2")
            client.push(model_dir, name=name_of(i), aliases=["production"])
            client.set_pool_placement(name_of(i), memory_bytes=width * width * 4)
            total += width * width * 4
    return total


def request_for(i: int) -> pb.ModelInferRequest:
    width = width_of(i)
    request = pb.ModelInferRequest(model_name=name_of(i))
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, width])
    request.raw_input_contents.append(np.ones((1, width), dtype=np.float32).tobytes())
    return request


async def one_budget(
    registry: str, cache: Path, budget_mib: int, stream: list[int], seconds: float
) -> dict[str, float]:
    replica = InferenceApp(
        InferenceSettings(
            host="127.0.0.1", grpc_port=0, metrics_port=-1, pool=True, registry=registry,
            memory_budget_mb=budget_mib, cache_dir=cache, torch_threads=1,
        )
    )  # fmt: skip
    await replica.start()
    discovery = StaticDiscovery([Endpoint(POOL_MODEL, f"127.0.0.1:{replica.port}")])
    router = RouterApp(discovery, RegistryPolicySource(registry))
    port = await router.start()
    latencies: list[float] = []
    failures = 0
    try:
        while not router.placer.replicas or not router.router.pool.pooled:  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            queue = list(reversed(stream))
            stop_at = time.monotonic() + seconds

            async def client() -> None:
                nonlocal failures
                while queue and time.monotonic() < stop_at:
                    i = queue.pop()
                    started = time.perf_counter()
                    try:
                        await stub.ModelInfer(request_for(i), timeout=60)
                    except grpc.aio.AioRpcError:
                        failures += 1
                        continue
                    latencies.append(time.perf_counter() - started)

            await asyncio.gather(*(client() for _ in range(4)))
        assert replica.pool is not None
        stats = replica.pool.cache.stats
        served = stats.hits + stats.misses
        return {
            "requests": len(latencies) + failures,
            "failed": failures,
            "hit_rate": stats.hits / served if served else 0.0,
            "loads": stats.misses,
            "evictions": stats.evictions,
            "peak_mib": replica.pool.cache.charged_bytes / MIB,
            "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
            "p99_ms": float(np.percentile(latencies, 99)) * 1000 if latencies else 0.0,
        }
    finally:
        await router.stop(0)
        await replica.stop(grace=0.5)


async def run(requests: int, budgets: list[int], seconds: float, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-pool-") as tmp:
        root = Path(tmp)
        server = RegistryServer(
            RegistrySettings(
                database=f"sqlite:///{root / 'registry.db'}", blob_dir=root / "blobs",
                host="127.0.0.1", grpc_port=0,
            )
        )  # fmt: skip
        await server.start()
        try:
            (root / "src").mkdir()
            total = await asyncio.to_thread(push_models, server.address, root / "src")
            rng = random.Random(seed)
            ranks = list(range(MODELS))
            rng.shuffle(ranks)  # popularity independent of size
            weights = [1.0 / (rank + 1) ** 1.1 for rank in ranks]
            stream = rng.choices(range(MODELS), weights=weights, k=requests)
            print(f"{MODELS} models, {total / MIB:.1f} MiB of weights in all; Zipf s=1.1, "
                  f"{requests} requests per budget (at most {seconds:.0f} s), 4 in flight")  # fmt: skip
            print(f"{'budget':>14} {'hit rate':>8} {'loads':>6} {'evicted':>7} "
                  f"{'failed':>6} {'p50 ms':>7} {'p99 ms':>7}")  # fmt: skip
            for percent in budgets:
                budget_mib = max(1, round(total * percent / 100 / MIB))
                row = await one_budget(server.address, root / "cache", budget_mib, stream, seconds)
                print(
                    f"{budget_mib:>5} MiB ({percent:>3}%) {row['hit_rate']:>8.1%} "
                    f"{row['loads']:>6.0f} {row['evictions']:>7.0f} {row['failed']:>6.0f} "
                    f"{row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f}"
                    + ("" if row["requests"] == requests else f"  ({row['requests']:.0f} sent)")
                )
        finally:
            await server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--budgets", default="10,25,50,100", help="percent of all models' bytes")
    parser.add_argument("--seconds", type=float, default=90.0, help="cap per budget")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    asyncio.run(run(args.requests, budgets, args.seconds, args.seed))


if __name__ == "__main__":
    main()
