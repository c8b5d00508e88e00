"""Router overhead: added latency and CPU per forwarded request (not a test).

Three processes: a bare grpc.aio server that answers ModelInfer with fixed
bytes and does no work (the baseline and the router's only backend), the
router in front of it, and this driver. Measured:

1. p50/p99 latency at concurrency 1, direct vs through the router;
2. CPU seconds per request (utime+stime from /proc/<pid>/stat) of the bare
   server when driven directly, and of the router process when driven through
   it, at a fixed concurrency; their ratio; and router cores per 1,000 req/s.
   For reference, the same for the router with --multiplex (one stream per
   replica) and for the least a grpc.aio forwarder can do (await, return).
3. The same for the router with its fast path (`--fast-path on`: the Go
   modelport-fastpath in front, `make fastpath`), its CPU summed over the
   Python router and the Go process (its child).

    python benchmarks/bench_router.py [--seconds 5] [--concurrency 16] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from modelport.proto.inference import grpc_service_pb2 as pb  # noqa: E402
from modelport.router import wire  # noqa: E402

INFER = "/inference.GRPCInferenceService/ModelInfer"
TICKS = os.sysconf("SC_CLK_TCK")


def request_bytes() -> bytes:
    """A `simple` request: two INT32 [1,16] tensors as raw bytes."""
    request = pb.ModelInferRequest(model_name="simple", id="bench")
    for name in ("INPUT0", "INPUT1"):
        tensor = request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        del tensor
        request.raw_input_contents.append(np.arange(16, dtype=np.int32).tobytes())
    return request.SerializeToString()


def answer_bytes() -> bytes:
    answer = pb.ModelInferResponse(model_name="simple", model_version="1", id="bench")
    for name in ("OUTPUT0", "OUTPUT1"):
        answer.outputs.add(name=name, datatype="INT32", shape=[1, 16])
        answer.raw_output_contents.append(np.arange(16, dtype=np.int32).tobytes())
    return answer.SerializeToString()


async def serve_bare() -> None:
    """The baseline: answers every ModelInfer with the same bytes, no work."""
    answer = answer_bytes()
    index = pb.RepositoryIndexResponse()
    index.models.add(name="simple", version="1", state="READY")
    index_bytes = index.SerializeToString()

    async def infer(request: bytes, context: object) -> bytes:
        return answer

    async def repository_index(request: bytes, context: object) -> bytes:
        return index_bytes

    async def stream(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
        """The same answer per request, with the request's id (which the router sets)."""
        async for request in requests:
            request_id = wire.routing_fields(request)[2].encode()
            yield wire.stream_response(answer + wire.length_delimited(b"\x1a", request_id))

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "inference.GRPCInferenceService",
                {
                    "ModelInfer": grpc.unary_unary_rpc_method_handler(infer),
                    "RepositoryIndex": grpc.unary_unary_rpc_method_handler(repository_index),
                    "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(stream),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def serve_bare_typed() -> None:
    """The usual way to write a bare server: a generated servicer (requests parsed)."""
    from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc

    answer = pb.ModelInferResponse.FromString(answer_bytes())

    class Bare(pb_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request: object, context: object) -> object:
            return answer

    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Bare(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def serve_floor_proxy(backend: str) -> None:
    """The least a Python grpc.aio forwarder can do: await the backend, return its bytes."""
    channel = grpc.aio.insecure_channel(backend)
    call = channel.unary_unary(INFER)

    async def infer(request: bytes, context: object) -> bytes:
        answer: bytes = await call(request)
        return answer

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "inference.GRPCInferenceService",
                {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)},
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def serve_router(backend: str, multiplex: bool = False, fast_path: bool = False) -> None:
    from modelport.common.fastpath_process import find_binary
    from modelport.common.server import ServerOptions
    from modelport.router.app import RouterApp
    from modelport.router.discovery import StaticDiscovery, parse_endpoint

    binary = find_binary() if fast_path else None
    if fast_path and binary is None:
        raise SystemExit("--role router-fastpath: no modelport-fastpath binary (make fastpath)")
    app = RouterApp(
        StaticDiscovery([parse_endpoint(f"simple={backend}")]),
        options=ServerOptions(host="127.0.0.1", port=0),
        metrics=True,  # as deployed: the per-request metric work is part of the cost
        multiplex=multiplex,
        fast_path=binary,
    )
    port = await app.start()
    while not app.table.candidates("simple", ""):
        await asyncio.sleep(0.02)
    if app.fastpath is not None:  # the route snapshot reached the Go process
        await app.fastpath.publish()
        await asyncio.sleep(0.3)
    print(port, flush=True)
    await asyncio.Event().wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and its children (the fast path's Go process)."""
    total = 0
    for member in (pid, *children(pid)):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as listed:
            out.extend(int(c) for c in listed.read().split())
    return out


def spawn(*args: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


async def latencies(direct: str, routed: str, count: int) -> tuple[list[float], list[float]]:
    """Concurrency 1, direct and routed requests alternating, so both see the
    same machine (the load of a shared host drifts over seconds)."""
    data = request_bytes()
    async with (
        grpc.aio.insecure_channel(direct) as direct_channel,
        grpc.aio.insecure_channel(routed) as routed_channel,
    ):
        calls = (direct_channel.unary_unary(INFER), routed_channel.unary_unary(INFER))
        for _ in range(50):
            for call in calls:
                await call(data)
        out: tuple[list[float], list[float]] = ([], [])
        for _ in range(count):
            for call, samples in zip(calls, out, strict=True):
                start = time.perf_counter()
                await call(data)
                samples.append(time.perf_counter() - start)
    return out


async def throughput(address: str, seconds: float, concurrency: int, pid: int) -> dict[str, float]:
    data = request_bytes()
    done = 0
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(INFER)
        for _ in range(100):
            await call(data)
        stop_at = time.monotonic() + seconds
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                await call(data)
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - wall0
    return {"requests": done, "rps": done / wall, "cpu_s_per_request": cpu / max(done, 1)}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3


async def measure(args: argparse.Namespace) -> dict[str, object]:
    bare, bare_port = spawn("--role", "bare")
    router, router_port = spawn("--role", "router", "--backend", f"127.0.0.1:{bare_port}")
    floor, floor_port = spawn("--role", "floor", "--backend", f"127.0.0.1:{bare_port}")
    typed, typed_port = spawn("--role", "bare-typed")
    muxed, muxed_port = spawn("--role", "router-multiplex", "--backend", f"127.0.0.1:{bare_port}")
    fast, fast_port = spawn("--role", "router-fastpath", "--backend", f"127.0.0.1:{bare_port}")
    try:
        direct, routed = f"127.0.0.1:{bare_port}", f"127.0.0.1:{router_port}"
        lat_direct, lat_routed = await latencies(direct, routed, args.requests)
        fast_address = f"127.0.0.1:{fast_port}"
        lat_direct_2, lat_fast = await latencies(direct, fast_address, args.requests)
        bare_load = await throughput(direct, args.seconds, args.concurrency, bare.pid)
        router_load = await throughput(routed, args.seconds, args.concurrency, router.pid)
        floor_address = f"127.0.0.1:{floor_port}"
        floor_load = await throughput(floor_address, args.seconds, args.concurrency, floor.pid)
        muxed_address = f"127.0.0.1:{muxed_port}"
        muxed_load = await throughput(muxed_address, args.seconds, args.concurrency, muxed.pid)
        typed_address = f"127.0.0.1:{typed_port}"
        typed_load = await throughput(typed_address, args.seconds, args.concurrency, typed.pid)
        fast_load = await throughput(fast_address, args.seconds, args.concurrency, fast.pid)
        # Again, last: the bare server's own figure drifts with the machine's load.
        bare_again = await throughput(direct, args.seconds, args.concurrency, bare.pid)
    finally:
        for process in (fast, typed, muxed, floor, router, bare):
            process.kill()
            process.wait()
    ratio = router_load["cpu_s_per_request"] / bare_load["cpu_s_per_request"]
    return {
        "machine_cpus": os.cpu_count(),
        "concurrency_1": {
            "direct_p50_ms": pct(lat_direct, 50),
            "router_p50_ms": pct(lat_routed, 50),
            "added_p50_ms": pct(lat_routed, 50) - pct(lat_direct, 50),
            "direct_p99_ms": pct(lat_direct, 99),
            "router_p99_ms": pct(lat_routed, 99),
            "requests": args.requests,
            "fast_path_direct_p50_ms": pct(lat_direct_2, 50),
            "fast_path_p50_ms": pct(lat_fast, 50),
            "fast_path_added_p50_ms": pct(lat_fast, 50) - pct(lat_direct_2, 50),
            "fast_path_p99_ms": pct(lat_fast, 99),
        },
        "cpu": {
            "concurrency": args.concurrency,
            "bare_server_us_per_request": bare_load["cpu_s_per_request"] * 1e6,
            "router_us_per_request": router_load["cpu_s_per_request"] * 1e6,
            "router_vs_bare": ratio,
            "router_cores_per_1000_rps": router_load["cpu_s_per_request"] * 1000,
            # A forwarder with no routing logic at all: the grpc.aio floor.
            "floor_proxy_us_per_request": floor_load["cpu_s_per_request"] * 1e6,
            "floor_proxy_vs_bare": floor_load["cpu_s_per_request"] / bare_load["cpu_s_per_request"],
            # The router with --multiplex: one ModelStreamInfer stream per replica.
            "router_multiplex_us_per_request": muxed_load["cpu_s_per_request"] * 1e6,
            "router_multiplex_vs_bare": muxed_load["cpu_s_per_request"]
            / bare_load["cpu_s_per_request"],
            # A bare server written the usual way (generated servicer, request
            # parsed, prebuilt answer serialized): a less strict baseline.
            "bare_typed_us_per_request": typed_load["cpu_s_per_request"] * 1e6,
            "router_vs_bare_typed": router_load["cpu_s_per_request"]
            / typed_load["cpu_s_per_request"],
            "direct_rps": bare_load["rps"],
            "routed_rps": router_load["rps"],
            # The router with --fast-path on: Python router + Go process, summed.
            "fast_path_us_per_request": fast_load["cpu_s_per_request"] * 1e6,
            "fast_path_vs_bare": fast_load["cpu_s_per_request"] / bare_load["cpu_s_per_request"],
            "bare_server_again_us_per_request": bare_again["cpu_s_per_request"] * 1e6,
            "fast_path_vs_bare_again": fast_load["cpu_s_per_request"]
            / bare_again["cpu_s_per_request"],
            "fast_path_rps": fast_load["rps"],
        },
        "mean_added_ms": (statistics.mean(lat_routed) - statistics.mean(lat_direct)) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--role",
        choices=[
            "driver",
            "bare",
            "bare-typed",
            "router",
            "router-multiplex",
            "router-fastpath",
            "floor",
        ],
        default="driver",
    )
    parser.add_argument("--backend", default="")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.role == "bare":
        asyncio.run(serve_bare())
    elif args.role == "bare-typed":
        asyncio.run(serve_bare_typed())
    elif args.role == "floor":
        asyncio.run(serve_floor_proxy(args.backend))
    elif args.role == "router":
        asyncio.run(serve_router(args.backend))
    elif args.role == "router-multiplex":
        asyncio.run(serve_router(args.backend, multiplex=True))
    elif args.role == "router-fastpath":
        asyncio.run(serve_router(args.backend, fast_path=True))
    else:
        result = asyncio.run(measure(args))
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
