"""Scaling figures (`make bench-scaling`): how modelport's throughput and p99 move.

    .venv/bin/python benchmarks/bench_scaling.py [--seconds 3] [--repeats 1]
        [--figures benchmarks/figures] [--json FILE] [--only concurrency,batch,width,workers]

Four sweeps, each driven by the loadtest runner (closed loop, raw requests),
each printed as a table with the load average and plotted into --figures:

1. concurrency (1 … 128) for modelport and the bare grpc.aio server, MLP, batch-1
   requests: inferences/s and p99; the knee is the lowest concurrency that
   reaches 90% of modelport's best throughput, with its p99;
2. request batch size (1 … 32 rows per request), modelport, MLP, c=8: rows/s;
3. model size: three widths of the MLP's hidden layers (256, 1024, 4096), c=32,
   batch 1, with each width's in-process floor at its best batch beside it;
4. --workers: 1 worker pinned (taskset) to one core, 1 and 2 workers on two
   cores, c=32, batch 1; the load generator is pinned to no core.

On a shared machine read the ratios inside a sweep, not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from bench_full import floors, load_average
from harness import drivers, targets
from harness.drivers import Measurement
from modelport.inference.samples import MLP_CONFIG, build_samples

WIDTHS = (256, 1024, 4096)
CONCURRENCY = (1, 2, 4, 8, 16, 32, 64, 128)
BATCHES = (1, 2, 4, 8, 16, 32)


def build_widths(repo: Path) -> list[str]:
    """mlp_w{W}: [b,256] -> W -> W -> 16, exported like the sample MLP."""
    import torch
    from torch import nn

    names = []
    for width in WIDTHS:
        name = f"mlp_w{width}"
        names.append(name)
        folder = repo / name / "1"
        if (folder / "model.pt2").exists():
            continue
        folder.mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(
            MLP_CONFIG.replace('name: "mlp"', f'name: "{name}"')
        )
        torch.manual_seed(0)
        module = nn.Sequential(
            nn.Linear(256, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, 16),
        ).eval()
        batch = torch.export.Dim("batch", min=1, max=1024)
        with torch.no_grad():
            program = torch.export.export(
                module, (torch.zeros(4, 256),), dynamic_shapes=({0: batch},)
            )
        torch.export.save(program, str(folder / "model.pt2"))
    return names


def measure(
    target: targets.Target, model: str, batch: int, concurrency: int, args: argparse.Namespace
) -> Measurement:
    runs = [
        drivers.loadtest(target, model, batch, concurrency, args.seconds)
        for _ in range(args.repeats)
    ]
    first = runs[0]
    return Measurement(
        first.target, first.driver, model, batch, concurrency,
        infer_per_s=statistics.median(r.infer_per_s for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        errors=sum(r.errors for r in runs),
        cpu_us={k: statistics.median(r.cpu_us[k] for r in runs) for k in first.cpu_us},
    )  # fmt: skip


def line(label: str, m: Measurement) -> None:
    print(f"  {label:24} {m.infer_per_s:9,.0f}/s  p50 {m.p50_ms:7.2f} ms  p99 {m.p99_ms:7.2f} ms  "
          f"cpu {m.cpu_us.get('server', 0):7.0f} µs/req  err {m.errors}", flush=True)  # fmt: skip


def sweep_concurrency(args: argparse.Namespace, repo: Path, logs: Path) -> dict[str, object]:
    print(f"\n== throughput vs concurrency (mlp, batch 1; load {load_average()})", flush=True)
    live = [targets.start_bare(repo, "mlp", logs), targets.start_modelport(repo, "mlp", logs, [])]
    rows: dict[str, list[dict[str, object]]] = {t.name: [] for t in live}
    try:
        for concurrency in CONCURRENCY:
            for target in live:  # interleaved: drift falls on both alike
                m = measure(target, "mlp", 1, concurrency, args)
                line(f"{target.name} c={concurrency}", m)
                rows[target.name].append(asdict(m))
    finally:
        for target in live:
            target.stop()
    served = rows["modelport"]
    best = max(float(r["infer_per_s"]) for r in served)  # type: ignore[arg-type]
    knee = next(r for r in served if float(r["infer_per_s"]) >= 0.9 * best)  # type: ignore[arg-type]
    print(f"  knee: c={knee['concurrency']} ({knee['infer_per_s']:,.0f}/s, 90% of the best "
          f"{best:,.0f}/s), p99 there {knee['p99_ms']:.2f} ms")  # fmt: skip
    return {"rows": rows, "knee": knee, "load": load_average()}


def sweep_batch(args: argparse.Namespace, repo: Path, logs: Path) -> dict[str, object]:
    print(f"\n== throughput vs request batch size (mlp, c=8; load {load_average()})", flush=True)
    target = targets.start_modelport(repo, "mlp", logs, [])
    rows = []
    try:
        for batch in BATCHES:
            m = measure(target, "mlp", batch, 8, args)
            line(f"modelport b={batch}", m)
            rows.append(asdict(m))
    finally:
        target.stop()
    return {"rows": rows, "load": load_average()}


def sweep_width(args: argparse.Namespace, repo: Path, logs: Path) -> dict[str, object]:
    print(f"\n== throughput vs model size (MLP hidden width, c=32, batch 1; load {load_average()})")
    rows = []
    for name in build_widths(repo):
        floor = floors(repo, name, 1, 0.5)
        target = targets.start_modelport(repo, name, logs, [])
        try:
            m = measure(target, name, 1, 32, args)
        finally:
            target.stop()
        best = max(floor.values())
        line(f"{name} (floor {best:,.0f}/s)", m)
        rows.append(asdict(m) | {"floor_best": best, "floor_batch1": floor[min(floor)]})
    return {"rows": rows, "load": load_average()}


def sweep_workers(args: argparse.Namespace, repo: Path, logs: Path) -> dict[str, object]:
    cores = sorted(os.sched_getaffinity(0))
    print(f"\n== --workers on 1 and {len(cores)} cores (taskset; mlp, c=32, batch 1; "
          f"load {load_average()})", flush=True)  # fmt: skip
    configs = [(1, cores[:1]), (1, cores), (len(cores), cores)]
    rows = []
    for workers, pinned in configs:
        target = targets.start_modelport(repo, "mlp", logs, ["--workers", str(workers)])
        try:
            for pid in targets.tree(target.roles["server"]):
                subprocess.run(["taskset", "-a", "-p", "-c", ",".join(map(str, pinned)), str(pid)],
                               check=False, capture_output=True)  # fmt: skip
            m = measure(target, "mlp", 1, 32, args)
        finally:
            target.stop()
        line(f"workers={workers} cores={len(pinned)}", m)
        rows.append(asdict(m) | {"workers": workers, "cores": len(pinned)})
    return {"rows": rows, "load": load_average()}


def plot(results: dict[str, dict[str, object]], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if "concurrency" in results:
        rows = results["concurrency"]["rows"]
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        for name, points in rows.items():  # type: ignore[attr-defined]
            xs = [p["concurrency"] for p in points]
            a.plot(xs, [p["infer_per_s"] for p in points], marker="o", label=name)
            b.plot(xs, [p["p99_ms"] for p in points], marker="o", label=name)
        knee = results["concurrency"]["knee"]
        a.axvline(knee["concurrency"], color="grey", linestyle=":", label="knee (modelport)")  # type: ignore[index]
        for ax, label in ((a, "inferences/s"), (b, "p99 ms")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency")
            ax.set_ylabel(label)
            ax.legend()
        fig.suptitle(f"MLP, batch-1 requests (load {results['concurrency']['load']})")
        written.append(_save(fig, folder / "throughput_vs_concurrency.png"))
    if "batch" in results:
        points = results["batch"]["rows"]
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot([p["batch"] for p in points], [p["infer_per_s"] for p in points], marker="o")  # type: ignore[attr-defined]
        ax.set_xscale("log", base=2)
        ax.set_xlabel("rows per request")
        ax.set_ylabel("rows/s")
        ax.set_title("MLP, c=8, modelport")
        written.append(_save(fig, folder / "throughput_vs_batch.png"))
    if "width" in results:
        points = results["width"]["rows"]
        fig, ax = plt.subplots(figsize=(5, 4))
        xs = [str(p["model"]).removeprefix("mlp_w") for p in points]  # type: ignore[attr-defined]
        ax.plot(
            xs, [p["infer_per_s"] for p in points], marker="o", label="served, batch-1 requests"
        )  # type: ignore[attr-defined]
        ax.plot(xs, [p["floor_best"] for p in points], marker="s", label="floor, best batch")  # type: ignore[attr-defined]
        ax.set_yscale("log")
        ax.set_xlabel("hidden width")
        ax.set_ylabel("inferences/s")
        ax.legend()
        ax.set_title("MLP width, c=32")
        written.append(_save(fig, folder / "throughput_vs_width.png"))
    if "workers" in results:
        points = results["workers"]["rows"]
        fig, ax = plt.subplots(figsize=(5, 4))
        labels = [f"{p['workers']}w/{p['cores']}c" for p in points]  # type: ignore[attr-defined]
        ax.bar(labels, [p["infer_per_s"] for p in points])  # type: ignore[attr-defined]
        ax.set_ylabel("inferences/s")
        ax.set_title("--workers / cores (taskset), MLP, c=32")
        written.append(_save(fig, folder / "throughput_vs_workers.png"))
    return written


def _save(fig: object, path: Path) -> Path:
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path, dpi=90)  # type: ignore[attr-defined]
    return path


SWEEPS = {"concurrency": sweep_concurrency, "batch": sweep_batch, "width": sweep_width,
          "workers": sweep_workers}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per point")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", default=",".join(SWEEPS))
    parser.add_argument("--figures", type=Path, default=Path(__file__).parent / "figures")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    repo = build_samples(work / "models")
    logs = work / "logs"
    logs.mkdir()
    print(f"machine: {len(os.sched_getaffinity(0))} CPUs, load {load_average()}; logs in {logs}")
    results = {name: SWEEPS[name](args, repo, logs) for name in args.only.split(",")}
    for path in plot(results, args.figures):
        print(f"wrote {path}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
