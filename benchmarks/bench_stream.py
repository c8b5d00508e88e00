"""ModelStreamInfer through the router against the inference service directly (not a test).

    .venv/bin/python benchmarks/bench_stream.py [--messages 2000] [--repeats 3]
        [--timeout 120] [--json FILE]

One `modelport serve inference` with the `simple` sample (INT32 [1,16] add/sub)
and two routers in front of it on 127.0.0.1 (benchmarks/harness/targets.py):
one with --no-stream-relay (a ModelStreamInfer call to the replica per
streamed request, the path before the relay) and one as shipped (requests of
models that answer once share one call per replica, router/stream_relay.py).
Each run writes one stream of --messages small requests, as fast as flow
control lets it, and reads every answer, checking that each id comes back
once and without an error. Printed per target: messages/s (median of the
repeats, the targets' order rotating each repeat so a shared machine's drift
falls on all alike), the ratio to direct, and the router process's CPU per
message. Every stream is bounded by --timeout. Only the ratios mean anything
on a shared machine: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

import grpc
import numpy as np
from harness import targets
from modelport.inference.samples import build_simple
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.router import wire

STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
ID_TAG = b"\x1a"  # ModelInferRequest.id = 3
MODEL = "simple"


def base_request() -> bytes:
    request = pb.ModelInferRequest(model_name=MODEL)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        request.raw_input_contents.append(np.arange(16, dtype=np.int32).tobytes())
    return request.SerializeToString()


async def one_stream(address: str, messages: int, timeout: float) -> tuple[float, int, int]:
    """(seconds, answers, errors) of one stream of `messages` requests."""
    base = base_request()
    requests = [base + wire.length_delimited(ID_TAG, f"m{i}".encode()) for i in range(messages)]
    async with grpc.aio.insecure_channel(address) as channel:
        await channel.channel_ready()
        call = channel.stream_stream(STREAM)(iter(requests), timeout=timeout)
        seen: set[str] = set()
        errors = 0
        started = time.perf_counter()
        try:
            async for message in call:
                error, answer = wire.stream_parts(message)
                request_id = wire.routing_fields(answer)[2]
                if error or request_id in seen:
                    errors += 1
                seen.add(request_id)
        except grpc.aio.AioRpcError as exc:  # past --timeout: what is missing counts
            print(f"{address}: the stream ended {exc.code().name}", file=sys.stderr)
        elapsed = time.perf_counter() - started
    missing = messages - len(seen)
    return elapsed, len(seen), errors + missing


async def measure(
    runs: dict[str, targets.Target], args: argparse.Namespace
) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """messages/s and router µs of CPU per message for each target, per repeat."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    failures = 0
    names = list(runs)
    for repeat in range(args.repeats + 1):  # the first round warms up, unrecorded
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            target = runs[name]
            router_pid = target.roles.get("router")
            before = targets.cpu_seconds(router_pid) if router_pid else 0.0
            seconds, answered, errors = await one_stream(
                target.address, args.messages, args.timeout
            )
            after = targets.cpu_seconds(router_pid) if router_pid else 0.0
            if repeat == 0:
                continue
            failures += errors
            rates[name].append(answered / seconds)
            cpu[name].append((after - before) / max(answered, 1) * 1e6)
    return rates, cpu, failures


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per stream, at most")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    repo = work / "models"
    repo.mkdir()
    build_simple(repo)
    logs = work / "logs"
    logs.mkdir()
    print(f"machine: {len(os.sched_getaffinity(0))} CPUs, load {load_average()}; logs in {logs}")
    served = targets.start_modelport(repo, MODEL, logs, [])
    started: list[targets.Target] = [served]
    try:
        per_call = targets.start_router(served, MODEL, logs, ["--no-stream-relay"])
        started.append(per_call)
        relay = targets.start_router(served, MODEL, logs, [])
        started.append(relay)
        runs = {"direct": served, "router, call per request": per_call, "router, relay": relay}
        rates, cpu, failures = asyncio.run(measure(runs, args))
        direct = statistics.median(rates["direct"])
        print(f"\none stream of {args.messages} requests, median of {args.repeats} runs")
        print(f"{'target':26} {'messages/s':>11} {'/direct':>8} {'router µs/msg':>14}")
        table = []
        for name in runs:
            rate = statistics.median(rates[name])
            micros = statistics.median(cpu[name]) if name != "direct" else 0.0
            shown = f"{micros:14.0f}" if name != "direct" else f"{'-':>14}"
            print(f"{name:26} {rate:11,.0f} {rate / direct:8.2f} {shown}")
            table.append({"target": name, "messages_s": rate, "ratio": rate / direct})
        print(f"errors or missing answers: {failures}; load {load_average()}")
        if args.json:
            args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                             "rows": table}, indent=1))  # fmt: skip
    finally:
        for target in reversed(started):
            target.stop()


if __name__ == "__main__":
    main()
