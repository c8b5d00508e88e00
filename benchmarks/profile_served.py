"""Where the served path's CPU goes, per request: py-spy on a server under load.

    .venv/bin/python benchmarks/profile_served.py [--model mlp] [--target modelport]
        [--concurrency 32] [--batch 1] [--seconds 10] [--server-args "..."]

--target names a variant (benchmarks/harness/variants.py): modelport profiles
`modelport serve inference`; router profiles `modelport serve router` in front
of the bare server (so only the router's work is in the profile); bare the bare
server; compute-process the prototype's transport process. The load is
modelport's own loadtest runner (two processes). Prints each thread's share of
a core and the CPU per request by category (benchmarks/harness/breakdown.py).
Needs py-spy (`pip install py-spy` into .venv) and ptrace rights (root, or
kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from harness import breakdown, drivers, targets, variants
from modelport.inference.samples import build_samples


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        sys.exit("py-spy not found: .venv/bin/pip install py-spy")
    return found


def wait_busy(pid: int, timeout: float = 120) -> None:
    """Until the process uses a fifth of a core or more."""
    deadline = time.monotonic() + timeout
    last = sum(t for _, t in breakdown.thread_cpu(pid).values())
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(t for _, t in breakdown.thread_cpu(pid).values())
        if (now - last) / breakdown.TICKS >= 0.1:
            return
        last = now
    raise RuntimeError("the load never reached the server")


def profile(target: targets.Target, role: str, args: argparse.Namespace) -> None:
    pid = target.roles[role]
    result: dict[str, drivers.Measurement] = {}
    # The load processes take seconds to start: profile once the server is busy,
    # and keep the load going past the profile's end.
    load = threading.Thread(
        target=lambda: result.update(
            m=drivers.loadtest(
                target, args.model, args.batch, args.concurrency, args.seconds + 8, warmup=1.0
            )
        )
    )
    load.start()
    wait_busy(pid)
    time.sleep(2)
    raw = Path(tempfile.mkdtemp()) / "profile.raw"
    before = breakdown.thread_cpu(pid)
    children_before = (
        targets.cpu_seconds(pid) - sum(t for _, t in before.values()) / breakdown.TICKS
    )
    started = time.monotonic()
    subprocess.run(
        [
            py_spy(),
            "record",
            "-p",
            str(pid),
            "-d",
            str(int(args.seconds)),
            "-r",
            "250",
            "--threads",
            "-f",
            "raw",
            "-o",
            str(raw),
            "--nonblocking",
        ],
        check=True,
        capture_output=True,
    )
    after = breakdown.thread_cpu(pid)
    window = time.monotonic() - started
    children = (
        targets.cpu_seconds(pid)
        - sum(t for _, t in after.values()) / breakdown.TICKS
        - children_before
    )
    load.join()
    measured = result["m"]
    requests = max(1, int(measured.infer_per_s / args.batch * window))
    threads = breakdown.combine(before, after, breakdown.parse_raw(raw.read_text()))
    print(
        f"\n{target.name} ({role} pid {pid}), {args.model} batch {args.batch} c={args.concurrency}: "
        f"{measured.infer_per_s:,.0f} inf/s, p99 {measured.p99_ms:.1f} ms, "
        f"{sum(t.cpu_s for t in threads) / window:.2f} cores"
    )
    for thread in threads:
        if thread.cpu_s / window >= 0.01:
            print(
                f"  thread {thread.tid:>7} {thread.name:16} {thread.cpu_s / window:5.0%} of a core"
            )
    costs = breakdown.per_request(threads, requests)
    if children > 0.01 * window:  # --workers, compute processes: not sampled, CPU only
        print(f"  child processes       {children / window:5.0%} of a core")
        costs["child processes (workers, compute)"] = children / requests * 1e6
    total = sum(costs.values())
    print(f"  CPU per request: {total:.0f} µs")
    for category, us in sorted(costs.items(), key=lambda kv: -kv[1]):
        print(f"    {category:40} {us:7.1f} µs  {us / total:5.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--target", choices=variants.VARIANTS, default="modelport")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--server-args", default="")
    parser.add_argument("--router-args", default="")
    parser.add_argument("--proto-args", default="")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    repo = build_samples(work / "models", encoder=True)
    logs = work / "logs"
    logs.mkdir()
    target = variants.start(args.target, repo, args, logs)
    try:
        profile(target, "router" if "router" in target.roles else "server", args)
    finally:
        target.stop()


if __name__ == "__main__":
    main()
