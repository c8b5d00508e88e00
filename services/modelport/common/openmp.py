"""Freeing a thread's idle OpenMP workers, so the thread that computes gets the cores.

torch's CPU build runs its intra-op parallelism on GNU OpenMP (libgomp), which
keeps one pool of worker threads per thread that ever ran a parallel region.
Between regions a worker spins for a few milliseconds before it sleeps, so the
next region starts at once, but only while libgomp's managed threads (every
pool's workers together) are no more than the CPUs. Past that it spins ~100
iterations, and every parallel region pays a futex wake-up per worker.

So when a model is loaded on one thread (the loader, the event loop) and run on
another (the generative engine's step thread), the loader's idle pool alone puts
a 2-core machine over the line: measured here, 2,000 small GEMMs (16x256 @
256x1024, two threads) took 464-533 ms on a second thread against 224-313 ms
on the first (217-295 ms on the second once the first's pool was freed), and a
16-row decode step of the benchmark's Llama 21.5 ms inside the engine against
16.6 ms on the main thread (benchmarks/README.md, "Generation"). Freeing the loader's pool once
it is done (OpenMP 5.0's `omp_pause_resource_all`; the pool comes back if that
thread runs a parallel region again) gives the engine's thread the fast path.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path

log = logging.getLogger(__name__)

_OMP_PAUSE_HARD = 2  # omp_pause_resource_t: omp_pause_soft = 1, omp_pause_hard = 2


@functools.cache
def _openmp() -> ctypes.CDLL | None:
    """The OpenMP runtime torch was loaded with, or None (no torch, another runtime)."""
    try:
        import torch
    except ImportError:
        return None
    lib = Path(torch.__file__).parent / "lib"
    for pattern in ("libgomp*.so*", "libiomp5*.so*", "libomp*.so*"):
        for path in sorted(lib.glob(pattern)):
            try:
                runtime = ctypes.CDLL(str(path))
            except OSError:
                continue
            if hasattr(runtime, "omp_pause_resource_all"):
                runtime.omp_pause_resource_all.argtypes = [ctypes.c_int]
                runtime.omp_pause_resource_all.restype = ctypes.c_int
                return runtime
    return None


def release_idle_workers() -> bool:
    """Frees the calling thread's OpenMP worker pool; True when the runtime did.

    Safe to call at any time outside a parallel region (which a Python caller
    always is): the next parallel region on this thread starts a pool again.
    """
    runtime = _openmp()
    if runtime is None:
        return False
    freed = runtime.omp_pause_resource_all(_OMP_PAUSE_HARD) == 0
    if not freed:
        log.debug("omp_pause_resource_all refused; OpenMP workers kept")
    return freed
