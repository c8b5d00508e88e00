"""Quota accuracy and the cost of access control at the router (not a test).

Processes: an inference service serving the `simple` sample, and two routers in
front of it, one open and one with a policy, API keys and per-tenant quotas;
this driver sends the load.

1. Accuracy: open-loop (Poisson) load at a multiple of a tenant's configured
   rate, bounded in time and in requests outstanding; the admitted rate after
   the burst, and its error against the configured rate (target: within ±10%).
2. Overhead: closed loop at fixed concurrency through the open router and the
   secured one (a tenant with no quota), interleaved in rounds in one run;
   throughput and p50 ratios.

    python benchmarks/bench_quota.py [--seconds 6] [--rates 50,200,400] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from modelport.auth.api_keys import new_key  # noqa: E402
from modelport.proto.inference import grpc_service_pb2 as pb  # noqa: E402

INFER = "/inference.GRPCInferenceService/ModelInfer"
MODELPORT = [sys.executable, "-m", "modelport.cli"]


def request_bytes() -> bytes:
    request = pb.ModelInferRequest(model_name="simple")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        request.raw_input_contents.append(np.arange(16, dtype=np.int32).tobytes())
    return request.SerializeToString()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], port: int) -> subprocess.Popen[bytes]:
    env = {"PYTHONPATH": str(ROOT / "services"), "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen([*MODELPORT, *args], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
                return process
            except grpc.FutureTimeoutError:
                continue
    process.kill()
    raise RuntimeError(f"{args[:2]} did not start")


async def open_loop(address: str, key: str, rate: float, seconds: float) -> tuple[int, int, int]:
    """(admitted, refused by quota, other errors) for Poisson arrivals at `rate`."""
    data = request_bytes()
    metadata = (("authorization", f"Bearer {key}"),)
    counts = {"ok": 0, "quota": 0, "other": 0}
    pending: set[asyncio.Task[None]] = set()
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)

        async def one() -> None:
            try:
                await call(data, metadata=metadata, timeout=10)
                counts["ok"] += 1
            except grpc.aio.AioRpcError as error:
                kind = "quota" if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else "other"
                counts[kind] += 1
                if kind == "other" and counts[kind] <= 3:
                    print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)

        rng = random.Random(1)
        start = time.perf_counter()
        due = start
        while due - start < seconds:
            due += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if len(pending) < 512:  # bounded: a stalled server cannot grow this without end
                task = asyncio.ensure_future(one())
                pending.add(task)
                task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    return counts["ok"], counts["quota"], counts["other"]


async def closed_loop(
    address: str, key: str, concurrency: int, seconds: float
) -> tuple[float, float]:
    """(requests/s, p50 ms) at `concurrency` callers."""
    data = request_bytes()
    metadata = (("authorization", f"Bearer {key}"),) if key else None
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
        stop = time.perf_counter() + seconds

        async def caller() -> None:
            while time.perf_counter() < stop:
                sent = time.perf_counter()
                await call(data, metadata=metadata, timeout=10)
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return len(latencies) / seconds, statistics.median(latencies) * 1000


def wait_until_routed(open_router: str, secured_router: str, key: str, seconds: float = 60) -> None:
    """Both routers have read the replica's index and forward."""
    deadline = time.monotonic() + seconds
    for address, metadata in (
        (open_router, None),
        (secured_router, (("authorization", f"Bearer {key}"),)),
    ):
        with grpc.insecure_channel(address) as channel:
            call = channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
            while True:
                try:
                    call(request_bytes(), metadata=metadata, timeout=5)
                    break
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rates", default="50,200,400", help="configured requests/s to check")
    parser.add_argument("--offered", type=float, default=2.0, help="offered load / configured rate")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench-quota-"))
    subprocess.run(
        [*MODELPORT, "samples", str(work / "models")],
        check=True,
        env={"PYTHONPATH": str(ROOT / "services"), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
    )
    keys = {f"rate-{r:g}": new_key(f"rate-{r:g}") for r in rates} | {"free": new_key("free")}
    tenants = {t: {"grants": [{"actions": ["infer", "metadata"], "models": ["*"]}]} for t in keys}
    for r in rates:
        tenants[f"rate-{r:g}"]["quota"] = {"requests_per_second": r, "burst": max(1.0, r / 5)}
    (work / "policy.yaml").write_text(yaml.safe_dump({"tenants": tenants}))
    (work / "keys.yaml").write_text(
        yaml.safe_dump({"keys": [e.to_yaml_item() for _, e in keys.values()]})
    )

    replica_port, open_port, secured_port = free_port(), free_port(), free_port()
    processes = [
        start(
            [
                "serve",
                "inference",
                "--model-repository",
                str(work / "models"),
                "--grpc-port",
                str(replica_port),
                "--metrics-port",
                "-1",
            ],
            replica_port,
        )
    ]
    common = [
        "serve",
        "router",
        "--endpoint",
        f"simple=127.0.0.1:{replica_port}",
        "--metrics-port",
        "-1",
    ]
    processes.append(start([*common, "--grpc-port", str(open_port)], open_port))
    processes.append(
        start(
            [
                *common,
                "--grpc-port",
                str(secured_port),
                "--auth-policy-file",
                str(work / "policy.yaml"),
                "--api-keys-file",
                str(work / "keys.yaml"),
            ],
            secured_port,
        )
    )
    wait_until_routed(f"127.0.0.1:{open_port}", f"127.0.0.1:{secured_port}", keys["free"][0])
    try:
        accuracy = []
        for rate in rates:
            key = keys[f"rate-{rate:g}"][0]
            ok, refused, other = asyncio.run(
                open_loop(f"127.0.0.1:{secured_port}", key, rate * args.offered, args.seconds)
            )
            burst = max(1.0, rate / 5)
            admitted = (ok - burst) / args.seconds
            achieved = (ok + refused + other) / args.seconds  # what the generator got out
            accuracy.append(
                {
                    "configured_rps": rate,
                    "offered_rps": round(achieved, 1),
                    "admitted_rps": round(admitted, 1),
                    "error_pct": round(100 * (admitted / rate - 1), 1),
                    "refused": refused,
                    "other_errors": other,
                }
            )
        rounds = []
        asyncio.run(
            closed_loop(f"127.0.0.1:{secured_port}", keys["free"][0], args.concurrency, 1.0)
        )  # warm keys
        for _ in range(args.rounds):
            plain = asyncio.run(
                closed_loop(f"127.0.0.1:{open_port}", "", args.concurrency, args.seconds / 2)
            )
            secured = asyncio.run(
                closed_loop(
                    f"127.0.0.1:{secured_port}", keys["free"][0], args.concurrency, args.seconds / 2
                )
            )
            rounds.append((plain, secured))
        ratio_rps = statistics.median(s[0] / p[0] for p, s in rounds)
        ratio_p50 = statistics.median(s[1] / p[1] for p, s in rounds)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    overhead = {
        "open_rps": [round(p[0]) for p, _ in rounds],
        "secured_rps": [round(s[0]) for _, s in rounds],
        "secured/open throughput": round(ratio_rps, 3),
        "secured/open p50": round(ratio_p50, 3),
        "concurrency": args.concurrency,
    }
    if args.json:
        print(json.dumps({"accuracy": accuracy, "overhead": overhead}, indent=2))
        return
    print(
        f"quota accuracy: open loop at {args.offered:g}x the configured rate, {args.seconds:g} s each"
    )
    print(
        f"{'configured/s':>12} {'offered/s':>10} {'admitted/s':>11} {'error':>7} {'refused':>8} {'errors':>7}"
    )
    for row in accuracy:
        print(
            f"{row['configured_rps']:>12g} {row['offered_rps']:>10g} {row['admitted_rps']:>11} "
            f"{row['error_pct']:>6}% {row['refused']:>8} {row['other_errors']:>7}"
        )
    print(
        f"\naccess control overhead at concurrency {args.concurrency} (medians of {args.rounds} rounds):"
    )
    print(f"  open router {overhead['open_rps']} req/s, secured {overhead['secured_rps']} req/s")
    print(f"  secured/open throughput {ratio_rps:.3f}, p50 {ratio_p50:.3f}")


if __name__ == "__main__":
    main()
