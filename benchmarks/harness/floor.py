"""The in-process floor: the exported program called directly, no server, no serialization.

    python benchmarks/harness/floor.py REPO MODEL [--seconds 1] [--threads N]

Prints JSON {batch: inferences/s} for batch 1, 2, 4, ... up to the model's
max_batch_size, the best of torch on one thread and on every core (--threads):
on a busy machine OpenMP's spinning team of N threads can be 10x slower than one
thread, and the floor is what the model can do, not what a bad setting does.
Run as its own process so its torch threads never share a process with a load
generator.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import torch


def batches(repo: Path, model: str) -> list[int]:
    config = (repo / model / "config.pbtxt").read_text()
    found = re.search(r"max_batch_size:\s*(\d+)", config)
    top = int(found.group(1)) if found else 1
    sizes, size = [], 1
    while size <= max(top, 1):
        sizes.append(size)
        size *= 2
    return sizes


def rate(module: torch.nn.Module, example: torch.Tensor, seconds: float) -> float:
    with torch.inference_mode():
        for _ in range(3):
            module(example)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            module(example)
            calls += 1
    return calls * example.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("model")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    program = torch.export.load(str(args.repo / args.model / "1" / "model.pt2"))
    module = program.module()
    example = next(iter(program.example_inputs[0]))
    row = tuple(example.shape[1:])
    result: dict[int, float] = {}
    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        for b in batches(args.repo, args.model):
            result[b] = max(result.get(b, 0.0), rate(module, torch.randn(b, *row), args.seconds))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
