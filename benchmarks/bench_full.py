"""The served path against its limits and its peers, in one run (`make bench-full`).

    .venv/bin/python benchmarks/bench_full.py [--models mlp,encoder] [--batches 1,8]
        [--concurrency 1,8,32,128] [--targets bare,modelport,router,router-fastpath,kserve,mlserver]
        [--drivers perf_analyzer,loadtest] [--seconds 5] [--repeats 3] [--json FILE]

For each model: the in-process floor (benchmarks/harness/floor.py), then every
target started side by side on 127.0.0.1 (harness/targets.py) and driven in
turn by both load generators (harness/drivers.py) at each batch size and
concurrency. Each cell is repeated, the targets' order rotating every repeat so
that a shared machine's drift falls on all of them alike; medians are reported.
The ratios printed at the end are the issue's targets:

  served/floor   modelport inferences/s over the floor at its best batch
  served/bare    modelport over the bare grpc.aio server, same driver and load
  router CPU     the router process's CPU per forwarded request over the bare
                 server's CPU per request (loadtest, same concurrency); for the
                 target router-fastpath (--fast-path on) the Python router and
                 its Go modelport-fastpath child summed
  p99 at c=32    modelport against each peer

Load average (from /proc/loadavg) is printed with every table: on a shared
machine only ratios taken inside one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from harness import drivers, targets
from harness.drivers import Measurement
from harness.report import print_model_report, print_summary
from modelport.common.fastpath_process import find_binary
from modelport.inference.samples import build_samples


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def floors(repo: Path, model: str, repeats: int, seconds: float) -> dict[int, float]:
    script = Path(__file__).parent / "harness" / "floor.py"
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, str(script), str(repo), model, "--seconds", str(seconds)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append({int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()})
    return {b: statistics.median(r[b] for r in runs) for b in runs[0]}


def start_targets(
    args: argparse.Namespace, repo: Path, model: str, logs: Path
) -> list[targets.Target]:
    threads = len(os.sched_getaffinity(0))
    wanted = args.targets.split(",")
    started: list[targets.Target] = []
    try:
        if "bare" in wanted:
            started.append(targets.start_bare(repo, model, logs))
        routers = [name for name in ("router", "router-fastpath") if name in wanted]
        if "router-fastpath" in routers and find_binary() is None:
            print("  (router-fastpath: no modelport-fastpath binary; run `make fastpath`)")
            routers.remove("router-fastpath")
        if "modelport" in wanted or routers:
            served = targets.start_modelport(repo, model, logs, args.server_args.split())
            started.append(served)
        if "modelport-python" in wanted:  # the same server with its transport in Python
            extra = [*args.server_args.split(), "--fast-path", "off"]
            started.append(
                targets.start_modelport(repo, model, logs, extra, name="modelport-python")
            )
        if "modelport" in wanted or routers:
            for name in routers:
                extra = args.router_args.split()
                started.append(targets.start_router(served, model, logs, extra, name=name))
        for peer, start in (
            ("kserve", lambda: targets.start_kserve(repo, model, logs, threads)),
            ("mlserver", lambda: targets.start_mlserver(repo, model, logs)),
        ):
            if peer in wanted:
                target = start()
                if target is None:
                    print(f"  ({peer}: no .venv-{peer}; run benchmarks/peers/install.sh)")
                else:
                    started.append(target)
    except BaseException:
        for target in started:
            target.stop()
        raise
    return started


def measure_model(
    args: argparse.Namespace, repo: Path, model: str, logs: Path
) -> dict[str, object]:
    print(f"\n== {model}: floor (load {load_average()})", flush=True)
    floor = floors(repo, model, args.repeats, args.floor_seconds)
    print("  " + ", ".join(f"b{b}: {v:,.0f}/s" for b, v in floor.items()), flush=True)
    live = start_targets(args, repo, model, logs)
    wanted_drivers = args.drivers.split(",")
    if "perf_analyzer" in wanted_drivers and not drivers.perf_analyzer_available():
        print("  (perf_analyzer: no .venv-perf; run benchmarks/perf_analyzer.sh once)")
        wanted_drivers.remove("perf_analyzer")
    cells: dict[tuple[str, str, int, int], list[Measurement]] = defaultdict(list)
    load_before = load_average()
    try:
        for batch in (int(b) for b in args.batches.split(",")):
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                for repeat in range(args.repeats):
                    shift = repeat % len(live)
                    for target in live[shift:] + live[:shift]:
                        for driver in wanted_drivers:
                            if (
                                driver == "perf_analyzer"
                                and target.name not in targets.PERF_ANALYZER_TARGETS
                            ):
                                continue
                            run = (
                                drivers.perf_analyzer
                                if driver == "perf_analyzer"
                                else drivers.loadtest
                            )
                            try:
                                m = run(target, model, batch, concurrency, args.seconds)
                            except Exception as error:  # a peer failing must not lose the run
                                print(f"  {target.name}/{driver} b{batch} c{concurrency}: {error}")
                                continue
                            cells[(target.name, driver, batch, concurrency)].append(m)
                            print(
                                f"  {target.name:9} {driver:13} b{batch} c{concurrency:<3} "
                                f"{m.infer_per_s:9,.0f}/s p99 {m.p99_ms:8.2f} ms "
                                f"cpu {m.cpu_us}",
                                flush=True,
                            )
    finally:
        for target in reversed(live):
            target.stop()
    medians = {key: median_of(runs) for key, runs in cells.items()}
    section = {
        "model": model,
        "floor": floor,
        "load": [load_before, load_average()],
        "cells": [asdict(m) for m in medians.values()],
    }
    print_model_report(section)
    return section


def median_of(runs: list[Measurement]) -> Measurement:
    first = runs[0]
    roles = first.cpu_us.keys()
    return Measurement(
        first.target,
        first.driver,
        first.model,
        first.batch,
        first.concurrency,
        infer_per_s=statistics.median(r.infer_per_s for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        errors=sum(r.errors for r in runs),
        cpu_us={role: statistics.median(r.cpu_us[role] for r in runs) for role in roles},
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="mlp,encoder")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument(
        "--targets", default="bare,modelport,router,router-fastpath,kserve,mlserver"
    )
    parser.add_argument("--drivers", default="perf_analyzer,loadtest")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--floor-seconds", type=float, default=1.0, help="per batch size")
    parser.add_argument("--server-args", default="", help="extra flags for `serve inference`")
    parser.add_argument("--router-args", default="", help="extra flags for `serve router`")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-full-"))
    repo = build_samples(work / "models", encoder="encoder" in args.models.split(","))
    logs = work / "logs"
    logs.mkdir()
    started = time.time()
    print(f"machine: {len(os.sched_getaffinity(0))} CPUs, load {load_average()}; logs in {logs}")
    sections = [measure_model(args, repo, model, logs) for model in args.models.split(",")]
    print_summary(sections)
    print(f"\n({(time.time() - started) / 60:.1f} min, load {load_average()})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "sections": sections}, indent=1
            )
        )


if __name__ == "__main__":
    main()
