"""Elastic capacity, measured: hit rate vs memory budget for a skewed workload over 50
models (the pool's LRU cache), and the phases of real cold starts through the router.

    .venv/bin/python benchmarks/bench_elastic.py [--requests 20000] [--cold-starts 3]

Part 1 drives `inference.model_cache.ModelCache` (the code a pool replica runs) with
Zipf-distributed requests over 50 models whose sizes spread over a decade, at
several budgets, 8 requests in flight. Loads are simulated (the policy is what is
measured, not torch), so the figures do not depend on the machine. Beside it, a
count-based cache as Ray Serve's multiplexing has (`max models per replica`) given
the same memory: to be safe it must assume every model is the largest.

Part 2 starts a real router process holding `simple` at zero replicas and a tiny
autoscaler that follows the router's StreamIsActive, waits 1 s (standing in for pod
scheduling) and starts a real inference process; each cold start's phases come from
the trailer the router adds to the first held request. Run on a quiet machine for
figures to quote: process start and model load are CPU-bound.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

from modelport.inference.model_cache import Loaded, ModelCache  # noqa: E402

MB = 1 << 20


# --- part 1: hit rate vs budget --------------------------------------------------


def zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (rank**s) for rank in range(1, n + 1)]


async def hit_rate(
    sizes: Sequence[int], stream: Sequence[int], budget: int, by_count: int = 0
) -> tuple[float, int, int]:
    """(hit rate, loads, evictions) of the byte-budget LRU; with `by_count`, the
    same LRU bounded by a number of models instead (each charged the largest size)."""
    largest = max(sizes)

    async def load(name: str) -> Loaded[str]:
        await asyncio.sleep(0)
        size = largest if by_count else sizes[int(name)]
        return Loaded(name, size)

    async def unload(name: str, model: str) -> None:
        await asyncio.sleep(0)

    estimate = (lambda name: largest) if by_count else (lambda name: sizes[int(name)])
    cache: ModelCache[str] = ModelCache(
        by_count * largest if by_count else budget, load, unload, estimate=estimate
    )
    queue = list(stream)

    async def client() -> None:
        while queue:
            name = str(queue.pop())
            async with cache.use(name):
                await asyncio.sleep(0)

    await asyncio.gather(*(client() for _ in range(8)))
    stats = cache.stats
    return stats.hits / len(stream), stats.misses, stats.evictions


def part_one(requests: int, seed: int) -> None:
    rng = random.Random(seed)
    n = 50
    sizes = [int(MB * 10 ** rng.uniform(1, 2)) for _ in range(n)]  # 10-100 MB
    order = list(range(n))
    rng.shuffle(order)  # popularity unrelated to size
    weights = zipf_weights(n, 1.1)
    stream = [order[i] for i in rng.choices(range(n), weights=weights, k=requests)]
    total = sum(sizes)
    print(f"\n50 models, {total / MB:.0f} MB in all (10-100 MB each), Zipf s=1.1, "
          f"{requests} requests, 8 in flight")  # fmt: skip
    print(f"{'budget':>8} {'% of all':>8} | {'hit rate':>8} {'loads':>6} {'evict':>6} | "
          f"{'count-LRU':>9} {'models':>6} | ratio")  # fmt: skip
    for fraction in (0.1, 0.2, 0.3, 0.5, 0.75, 1.0):
        budget = int(total * fraction)
        rate, loads, evictions = asyncio.run(hit_rate(sizes, stream, budget))
        slots = budget // max(sizes)
        counted = asyncio.run(hit_rate(sizes, stream, budget, by_count=slots))[0] if slots else 0.0
        ratio = f"{rate / counted:.2f}x" if counted else "-"
        print(f"{budget / MB:>6.0f}MB {fraction:>8.0%} | {rate:>8.1%} {loads:>6} {evictions:>6} | "
              f"{counted:>9.1%} {slots:>6} | {ratio}")  # fmt: skip


# --- part 2: cold-start phases through the router ----------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "services")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modelport.cli", *args, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def listening(process: asyncio.subprocess.Process, keep: set[object]) -> str:
    assert process.stderr is not None
    while True:
        line = (await process.stderr.readline()).decode()
        if not line:
            raise RuntimeError("process exited before listening")
        found = re.search(r"gRPC listening on (127\.0\.0\.1:\d+)", line)
        if found:
            keep.add(asyncio.ensure_future(process.stderr.read()))
            return found.group(1)


async def part_two(cold_starts: int) -> None:
    import grpc
    from modelport.inference.samples import build_samples
    from modelport.proto.inference import grpc_service_pb2 as pb
    from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
    from modelport.proto.keda import externalscaler_pb2 as kpb
    from modelport.proto.keda import externalscaler_pb2_grpc as kpb_grpc

    keep: set[object] = set()
    work = Path(tempfile.mkdtemp(prefix="bench-elastic-"))
    repo = build_samples(work / "models")
    endpoints = work / "endpoints"
    endpoints.write_text("")
    router = await spawn(
        "serve", "router", "--discovery", "static", "--endpoints-file", str(endpoints),
        "--hold-model", "simple", "--idle-seconds", "1", "--host", "127.0.0.1",
        "--grpc-port", "0", "--metrics-port", "-1",
    )  # fmt: skip
    address = await listening(router, keep)
    replica: list[asyncio.subprocess.Process] = []

    async def autoscale() -> None:
        ref = kpb.ScaledObjectRef(name="simple", scalerMetadata={"model": "simple"})
        async with grpc.aio.insecure_channel(address) as channel:
            async for answer in kpb_grpc.ExternalScalerStub(channel).StreamIsActive(ref):
                if answer.result and not replica:
                    await asyncio.sleep(1.0)  # pod scheduling and image pull, simulated
                    port = free_port()
                    replica.append(await spawn(
                        "serve", "inference", "--model-repository", str(repo),
                        "--model-control-mode", "explicit", "--load-model", "simple",
                        "--host", "127.0.0.1", "--grpc-port", str(port), "--metrics-port", "-1",
                    ))  # fmt: skip
                    endpoints.write_text(f"simple=127.0.0.1:{port}\n")
                elif not answer.result and replica:
                    endpoints.write_text("")
                    process = replica.pop()
                    process.terminate()
                    await process.wait()

    scaler = asyncio.ensure_future(autoscale())
    rows: list[dict[str, float]] = []
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    request = pb.ModelInferRequest(model_name="simple", id="cold")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        request.raw_input_contents.append(a.tobytes())
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(cold_starts):
                while replica:  # wait for the idle scale-down: each request starts cold
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)
                started = time.monotonic()
                call = stub.ModelInfer(request, timeout=120)
                await call
                client = time.monotonic() - started
                trailer = dict(await call.trailing_metadata() or ())
                phases = {k: float(v) for k, v in (p.split("=") for p in
                          str(trailer.get("x-modelport-cold-start", "")).split(",") if p)}  # fmt: skip
                rows.append({**phases, "client": client})
                warm = time.monotonic()
                await stub.ModelInfer(request, timeout=10)
                rows[-1]["warm"] = time.monotonic() - warm
    finally:
        scaler.cancel()
        for process in [*replica, router]:
            process.terminate()
            await process.wait()
    print(f"\ncold starts through the router ({cold_starts}, 1 s simulated scheduling), seconds")
    columns = ["replica", "load", "total", "client", "warm"]
    print(" ".join(f"{c:>8}" for c in ["run", *columns]))
    for i, row in enumerate(rows, 1):
        print(f"{i:>8} " + " ".join(f"{row.get(c, float('nan')):>8.3f}" for c in columns))
    medians = [statistics.median(r.get(c, float("nan")) for r in rows) for c in columns]
    print(f"{'median':>8} " + " ".join(f"{m:>8.3f}" for m in medians))
    print(f"cold/warm ratio (median): {medians[3] / medians[4]:.0f}x; the router saw "
          f"{medians[2] / medians[3]:.0%} of the time the client waited")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    part_one(args.requests, args.seed)
    if args.cold_starts:
        asyncio.run(part_two(args.cold_starts))


if __name__ == "__main__":
    main()
