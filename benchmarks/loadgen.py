"""A small closed-loop OIP load generator for the benchmarks.

Each worker process runs an asyncio loop with its share of the concurrency and
sends one pre-serialized ModelInferRequest over a raw-bytes stub, so the
generator spends almost nothing per request on protobuf. Latencies are
returned in nanoseconds and merged by the caller.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from dataclasses import dataclass

import numpy as np

METHOD = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ns: np.ndarray

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not len(self.latencies_ns):
            return float("nan")
        return float(np.percentile(self.latencies_ns, q) / 1e6)


async def _worker_loop(
    address: str, payload: bytes, concurrency: int, warmup: float, duration: float
) -> tuple[list[int], int]:
    import grpc

    identity = lambda b: b  # noqa: E731 - bytes in, bytes out
    options = [("grpc.max_receive_message_length", 256 << 20)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        call = channel.unary_unary(
            METHOD, request_serializer=identity, response_deserializer=identity
        )
        latencies: list[int] = []
        errors = 0
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + duration

        async def client() -> None:
            nonlocal errors
            while True:
                sent = time.perf_counter_ns()
                if sent / 1e9 >= stop_at:
                    return
                try:
                    await call(payload, timeout=30)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                if sent / 1e9 >= measure_from:
                    latencies.append(time.perf_counter_ns() - sent)

        await asyncio.gather(*(client() for _ in range(concurrency)))
        return latencies, errors


def _worker(args: tuple[str, bytes, int, float, float], out: mp.Queue) -> None:  # type: ignore[type-arg]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    latencies, errors = asyncio.run(_worker_loop(*args))
    out.put((np.asarray(latencies, dtype=np.int64), errors))


def run_load(
    address: str,
    payload: bytes,
    *,
    concurrency: int,
    duration: float = 5.0,
    warmup: float = 1.0,
    processes: int = 2,
) -> LoadResult:
    """Closed loop at `concurrency` outstanding requests, split over processes."""
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    workers = [
        ctx.Process(target=_worker, args=((address, payload, share, warmup, duration), out))
        for share in shares
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=warmup + duration + 60) for _ in workers]
    for worker in workers:
        worker.join()
    latencies = np.concatenate([r[0] for r in results]) if results else np.array([])
    return LoadResult(
        requests=len(latencies),
        errors=sum(r[1] for r in results),
        seconds=duration,
        latencies_ns=latencies,
    )
