"""Measure a model folder on the caller's data: outputs, size, peak memory, latency, throughput.

Parent and child are measured one after the other in the same process on the
same machine, each loaded with the loaders the inference service uses. Peak
memory is the largest resident-set growth over the process's size before the
load, sampled every millisecond while the model loads and runs (torch's
allocations are outside Python's, so tracemalloc would not see them).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelport.artifacts import loaders
from modelport.artifacts.config import PLATFORM_AOTI, build_spec, read_config
from modelport.compression.derive import version_dir_of
from modelport.compression.evaldata import TensorData
from modelport.errors import InvalidInput

LATENCY_RUNS = 30
THROUGHPUT_BATCH_CAP = 64
# Seconds spent timing each model (latency, then throughput); tests set it low.
TIMING_SECONDS_ENV = "MODELPORT_DERIVE_TIMING_SECONDS"


def timing_seconds() -> float:
    try:
        return max(float(os.environ.get(TIMING_SECONDS_ENV, "2.0")), 0.01)
    except ValueError:
        return 2.0


@dataclass
class Measurement:
    outputs: list[np.ndarray]
    size_bytes: int
    peak_memory_mb: float
    latency_p50_ms: float
    throughput_per_s: float
    max_batch: int

    def metrics(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}size_bytes": float(self.size_bytes),
            f"{prefix}peak_memory_mb": round(self.peak_memory_mb, 3),
            f"{prefix}latency_p50_ms": round(self.latency_p50_ms, 4),
            f"{prefix}throughput_per_s": round(self.throughput_per_s, 2),
        }


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS, so the next model's growth is its own."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: only coarser
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Samples the resident set in a thread; `peak_mb` is the growth above the start."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        release_freed_memory()
        self.start = _rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.start) / (1 << 20)


def timed(run: Callable[[], Any], runs: int, budget: float) -> list[float]:
    """Seconds per call of `run`, after one warm-up call, within about `budget` seconds."""
    run()
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < runs and (not times or time.perf_counter() < deadline):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def folder_size(version_dir: Path) -> int:
    return sum(p.stat().st_size for p in version_dir.rglob("*") if p.is_file())


def _as_list(result: Any) -> list[Any]:
    if isinstance(result, dict):
        return list(result.values())
    return list(result) if isinstance(result, (list, tuple)) else [result]


def load_callable(model_dir: Path) -> tuple[Callable[..., Any], Any, Path]:
    """(callable on torch tensors, ModelSpec, version folder) of a tensor model folder."""
    config = read_config(model_dir)
    if config is None:
        raise InvalidInput(f"'{model_dir}' has no config.pbtxt")
    spec = build_spec(config.name or model_dir.name, config)
    version_dir = version_dir_of(model_dir)
    path = version_dir / spec.model_filename
    if spec.platform == PLATFORM_AOTI:
        return loaders.load_aoti_package(path, spec.name), spec, version_dir
    return loaders.load_exported_module(path, spec.name), spec, version_dir


def measure_tensor_model(model_dir: Path, data: TensorData) -> Measurement:
    import torch

    with PeakMemory() as memory:
        module, spec, version_dir = load_callable(model_dir)
        max_batch = max(1, min(spec.max_batch_size, THROUGHPUT_BATCH_CAP))

        def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
            tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
            with torch.inference_mode():
                return [
                    v.float().numpy() if v.is_floating_point() else v.numpy()
                    for v in _as_list(module(*tensors))
                ]

        chunks = [
            run([a[i : i + max_batch] for a in data.inputs])
            for i in range(0, data.samples, max_batch)
        ]
        outputs = [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
        one = [a[:1] for a in data.inputs]
        latency = timed(lambda: run(one), LATENCY_RUNS, timing_seconds() / 2)
        repeats = -(-max_batch // data.samples)
        full = [np.concatenate([a] * repeats)[:max_batch] for a in data.inputs]
        batch_times = timed(lambda: run(full), 1 << 20, timing_seconds() / 2)
    return Measurement(
        outputs=outputs,
        size_bytes=folder_size(version_dir),
        peak_memory_mb=memory.peak_mb,
        latency_p50_ms=statistics.median(latency) * 1000,
        throughput_per_s=max_batch * len(batch_times) / sum(batch_times),
        max_batch=max_batch,
    )
