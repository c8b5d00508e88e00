"""Runs one load level across several processes and gathers what they recorded.

Python spends ~30-60 µs of CPU per gRPC call, so one process cannot outrun a
fast server; the load is split over `processes` workers (spawned, so no gRPC
state is inherited across fork), each with its own event loop and channel(s).
They connect first, then start together at one CLOCK_MONOTONIC instant.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelport.client.channel import TlsOptions
from modelport.loadtest.recorder import Samples
from modelport.loadtest.worker import (
    ABORT,
    COUNTERS,
    FAILED,
    WorkerPlan,
    WorkerResult,
    run_worker,
)

# More processes than this rarely helps one target and costs start-up time and memory.
MAX_DEFAULT_PROCESSES = 8


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 quota (a pod's limit).

    os.cpu_count() reports the node's cores, which in a pod limited to 2 CPUs
    would start dozens of processes competing for two.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as limit:
            quota, period = limit.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


@dataclass(frozen=True)
class LoadSpec:
    url: str
    requests: list[bytes]
    concurrency: int = 0  # closed loop when > 0
    rate: float = 0.0  # open loop (requests/s) when > 0
    duration_s: float = 10.0
    warmup_s: float = 1.0
    timeout_s: float = 10.0
    streaming: bool = False
    processes: int = 0  # 0: one per usable core (2 to 8), never more than the callers
    channels_per_process: int = 1
    tls: TlsOptions | None = None
    api_key: str | None = None

    def __post_init__(self) -> None:
        if (self.concurrency > 0) == (self.rate > 0):
            raise ValueError("give exactly one of concurrency (closed loop) or rate (open loop)")
        if self.streaming and self.rate > 0:
            raise ValueError("--streaming runs closed loop: use --concurrency")
        if not self.requests:
            raise ValueError("no requests to send")

    def process_count(self) -> int:
        wanted = self.processes or min(MAX_DEFAULT_PROCESSES, max(2, available_cpus()))
        if self.concurrency:
            wanted = min(wanted, self.concurrency)
        return max(1, wanted)


@dataclass
class Progress:
    elapsed_s: float
    warmup_s: float
    total_s: float
    ok: int
    errors: int
    in_flight: int


@dataclass
class RunResult:
    spec: LoadSpec
    samples: Samples  # the measured window only
    measured_s: float
    workers: list[WorkerResult] = field(default_factory=list)
    all_requests: int = 0  # warm-up included
    host_cpu_busy: float | None = None  # share of all cores busy during the run (Linux)


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies over all cores, from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_load(
    spec: LoadSpec,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every_s: float = 0.25,
) -> RunResult:
    context = multiprocessing.get_context("spawn")
    count = spec.process_count()
    counters = context.Array("q", count * COUNTERS, lock=False)
    states = context.Array("b", count, lock=False)
    start = context.Value("q", 0, lock=False)
    results: multiprocessing.Queue[WorkerResult] = context.Queue()
    shares = _split(spec.concurrency, count) if spec.concurrency else [0] * count
    plans = [
        WorkerPlan(
            index=i,
            workers=count,
            url=spec.url,
            tls=spec.tls,
            api_key=spec.api_key,
            requests=spec.requests,
            streaming=spec.streaming,
            concurrency=shares[i],
            rate=spec.rate,
            warmup_s=spec.warmup_s,
            duration_s=spec.duration_s,
            timeout_s=spec.timeout_s,
            channels=spec.channels_per_process,
        )
        for i in range(count)
    ]
    processes = [
        context.Process(
            target=run_worker, args=(plan, counters, states, start, results), daemon=True
        )
        for plan in plans
    ]
    for process in processes:
        process.start()
    gathered: list[WorkerResult] = []
    try:
        if not _wait_ready(states, processes):
            start.value = ABORT
            errors = [results.get(timeout=10).error for _ in processes]
            raise RuntimeError(f"load worker failed: {next(e for e in errors if e)}")
        # A short lead so every worker is already waiting when the instant comes.
        t0 = time.monotonic_ns() + 50_000_000
        start.value = t0
        cpu_before = _cpu_times()
        total_s = spec.warmup_s + spec.duration_s
        deadline = time.monotonic() + total_s + spec.timeout_s + 30
        while len(gathered) < count:
            try:
                gathered.append(results.get(timeout=progress_every_s))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError("load workers did not finish in time") from None
                if not any(p.is_alive() for p in processes) and results.empty():
                    raise RuntimeError("a load worker died without reporting") from None
            if on_progress is not None:
                on_progress(_progress(counters, count, t0, spec.warmup_s, total_s))
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
    cpu_after = _cpu_times()
    host_busy = None
    if cpu_before and cpu_after and cpu_after[1] > cpu_before[1]:
        host_busy = (cpu_after[0] - cpu_before[0]) / (cpu_after[1] - cpu_before[1])
    failures = [w.error for w in gathered if w.error]
    if failures:
        raise RuntimeError(f"load worker failed: {failures[0]}")
    gathered.sort(key=lambda w: w.index)
    merged = Samples.merge([w.log for w in gathered])
    begin = int(spec.warmup_s * 1e9)
    window = merged.window(begin, begin + int(spec.duration_s * 1e9))
    return RunResult(spec, window, spec.duration_s, gathered, len(merged), host_busy)


def _wait_ready(states: Any, processes: list[Any]) -> bool:
    """True once every worker has connected; False as soon as one could not."""
    deadline = time.monotonic() + 60
    while not all(states):
        if FAILED in list(states):
            return False
        if time.monotonic() > deadline or not all(p.is_alive() for p in processes):
            raise RuntimeError("load workers could not start or connect within 60 s")
        time.sleep(0.01)
    return FAILED not in list(states)


def _progress(
    counters: object, count: int, t0_ns: int, warmup_s: float, total_s: float
) -> Progress:
    values = list(counters)  # type: ignore[call-overload]
    return Progress(
        elapsed_s=max(0.0, (time.monotonic_ns() - t0_ns) / 1e9),
        warmup_s=warmup_s,
        total_s=total_s,
        ok=sum(values[0::COUNTERS]),
        errors=sum(values[1::COUNTERS]),
        in_flight=sum(values[2::COUNTERS]),
    )
