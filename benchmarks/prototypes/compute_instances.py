"""Rows/s of the encoder in compute processes, driven directly (no transport).

    .venv/bin/python benchmarks/prototypes/compute_instances.py INSTANCES THREADS \
        [--batch 8] [--seconds 5]

Two batches in flight per process, as the batcher keeps them. Compares, say,
`1 2` (one 2-thread instance) with `2 1` (two 1-thread instances) on the same
cores (benchmarks/README.md, "The encoder's compute process"). GOMP_SPINCOUNT
in the environment overrides the compute processes' spin count.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services"))

from modelport.artifacts.config import build_spec, read_config
from modelport.inference import compute
from modelport.inference.samples import build_samples


async def drive(backend: compute.ProcessBackend, loops: int, batch: int, seconds: float) -> float:
    x = np.random.default_rng(0).standard_normal((batch, 64, 256), dtype=np.float32)
    done = 0

    async def loop() -> None:
        nonlocal done
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await backend.run_async([x])
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(loops)))
    return done * batch / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("instances", type=int)
    parser.add_argument("threads", type=int)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    repo = build_samples(Path(tempfile.mkdtemp()) / "models", encoder=True)
    spec = build_spec("encoder", read_config(repo / "encoder"))
    backend = compute.ProcessBackend(
        spec, repo / "encoder" / "1", instances=args.instances, threads=args.threads
    )
    try:
        loops = args.instances * compute.DEPTH
        rate = uvloop.run(drive(backend, loops, args.batch, args.seconds))
    finally:
        backend.close()
    print(f"{args.instances} instance(s) x {args.threads} thread(s), batch {args.batch}: "
          f"{rate:.1f} rows/s")  # fmt: skip


if __name__ == "__main__":
    main()
