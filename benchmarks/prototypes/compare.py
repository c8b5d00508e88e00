"""Prototypes against the bare server and modelport as it is, interleaved in one run.

    .venv/bin/python benchmarks/prototypes/compare.py [--model mlp] [--concurrency 32]
        [--batch 1] [--seconds 5] [--repeats 3] [--variants bare,modelport,compute-process]

Variants: bare (benchmarks/bare_server.py), bare-generic (raw-bytes handlers),
modelport (`serve inference`, --server-args), compute-process
(prototypes/compute_process.py, --proto-args), modelport-workers2
(`serve inference --workers 2`). Each repeat runs every variant once, in a
rotating order, with modelport's loadtest runner; medians are printed with
CPU per request and the ratio to the bare server.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "services"))

from harness import drivers  # noqa: E402
from harness.variants import start  # noqa: E402
from modelport.inference.samples import build_samples  # noqa: E402


def own_cpu(m: drivers.Measurement) -> float:
    """A forwarder's own CPU (its backend is charged apart); a server's whole tree."""
    return m.cpu_us.get("router", m.cpu_us.get("server", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="bare,modelport,compute-process")
    parser.add_argument("--driver", choices=["loadtest", "perf_analyzer"], default="loadtest")
    parser.add_argument("--server-args", default="")
    parser.add_argument("--proto-args", default="")
    parser.add_argument("--router-args", default="")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-proto-"))
    repo = build_samples(work / "models", encoder=True)
    (logs := work / "logs").mkdir()
    live = [start(v, repo, args, logs) for v in args.variants.split(",")]
    runs: dict[str, list[drivers.Measurement]] = defaultdict(list)
    measure = drivers.loadtest if args.driver == "loadtest" else drivers.perf_analyzer
    load = [Path("/proc/loadavg").read_text().split()[0]]
    try:
        for repeat in range(args.repeats):
            shift = repeat % len(live)
            for target in live[shift:] + live[:shift]:
                m = measure(target, args.model, args.batch, args.concurrency, args.seconds)
                runs[target.name].append(m)
                print(
                    f"  {target.name:20} {m.infer_per_s:9,.0f}/s p99 {m.p99_ms:7.1f} ms "
                    f"cpu {own_cpu(m):6.0f} µs/req",
                    flush=True,
                )
    finally:
        for target in live:
            target.stop()
    load.append(Path("/proc/loadavg").read_text().split()[0])
    print(
        f"\n{args.model} batch {args.batch} c={args.concurrency}, {args.driver}, median of "
        f"{args.repeats}; load average {load[0]} -> {load[1]}"
    )
    base = statistics.median(m.infer_per_s for m in runs.get("bare", runs[live[0].name]))
    base_cpu = statistics.median(own_cpu(m) for m in runs.get("bare", runs[live[0].name]))
    print(
        f"{'variant':20} {'infer/s':>9} {'/bare':>6} {'p50 ms':>7} {'p99 ms':>7} {'cpu µs/req':>10} "
        f"{'cpu/bare':>8}"
    )
    for name, ms in runs.items():
        cpu = statistics.median(own_cpu(m) for m in ms)
        tput = statistics.median(m.infer_per_s for m in ms)
        print(
            f"{name:20} {tput:>9,.0f} {tput / base:>6.2f} {statistics.median(m.p50_ms for m in ms):>7.1f} "
            f"{statistics.median(m.p99_ms for m in ms):>7.1f} "
            f"{statistics.median(own_cpu(m) for m in ms):>10.0f} {cpu / base_cpu:>8.2f}"
        )


if __name__ == "__main__":
    main()
