"""Does the model call hold the GIL? A pure-Python thread spins beside it and counts.

    .venv/bin/python benchmarks/prototypes/gil_probe.py [--models mlp,encoder] [--aoti]

For each model: how fast a busy Python thread counts alone, then while another
thread calls the model in a loop (batch 8, one torch thread, so the two need
only two cores). The share of its rate the counter loses is the share of time
the model thread holds the GIL: 0% would mean the model runs without it.
--aoti also compiles the program with AOTInductor (about 30 s per model) and
probes that.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services"))
from modelport.inference.samples import build_samples

ROWS = {"mlp": (256,), "encoder": (64, 256)}


def probe(
    module: object, example: torch.Tensor, seconds: float = 3.0
) -> tuple[float, float, float]:
    state = {"stop": False, "count": 0}

    def spin() -> None:
        n = 0
        while not state["stop"]:
            n += 1
        state["count"] = n

    def counting(with_model: bool) -> tuple[float, float, float]:
        state["stop"] = False
        thread = threading.Thread(target=spin)
        thread.start()
        calls, start, cpu = 0, time.perf_counter(), time.thread_time()
        with torch.inference_mode():
            while time.perf_counter() - start < seconds:
                if with_model:
                    module(example)  # type: ignore[operator]
                    calls += 1
                else:
                    time.sleep(0.01)
        wall, used = time.perf_counter() - start, time.thread_time() - cpu
        state["stop"] = True
        thread.join()
        return state["count"] / wall, calls / wall, used / max(calls, 1)

    alone, _, _ = counting(False)
    beside, rate, cpu = counting(True)
    return 1 - beside / alone, rate, cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="mlp,encoder")
    parser.add_argument("--aoti", action="store_true")
    args = parser.parse_args()
    sys.setswitchinterval(0.0002)  # as the inference service sets it
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="gil-probe-"))
    repo = build_samples(work, encoder=True)
    print(f"{'model':8} {'program':10} {'GIL held':>8} {'calls/s':>8} {'cpu ms/call':>11}")
    for name in args.models.split(","):
        program = torch.export.load(str(repo / name / "1" / "model.pt2"))
        example = torch.randn(8, *ROWS[name])
        kinds = {"torch.export": program.module()}
        if args.aoti:
            package = torch._inductor.aoti_compile_and_package(
                program, package_path=str(work / f"{name}.pt2")
            )
            kinds["AOTInductor"] = torch._inductor.aoti_load_package(package)
        for kind, module in kinds.items():
            with torch.inference_mode():
                module(example)
            held, rate, cpu = probe(module, example)
            print(f"{name:8} {kind:10} {held:>8.0%} {rate:>8.1f} {cpu * 1e3:>11.1f}")


if __name__ == "__main__":
    main()
