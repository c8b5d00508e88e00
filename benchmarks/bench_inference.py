"""Served throughput and latency vs the in-process floor, for `mlp` and `encoder`.

    .venv/bin/python benchmarks/bench_inference.py [--duration 5] [--repeats 3]

1. Floor: the model called directly in this process (torch, no server), at
   batch 1 and at its best batch; inferences per second.
2. Served: `modelport serve inference` as a subprocess on 127.0.0.1, driven by a
   closed-loop async load generator (benchmarks/loadgen.py) at concurrency
   1, 8 and 32; inferences/s and p50/p99 latency, median of --repeats runs.
3. The served/floor ratio (floor = best batch) per row.

The generator shares the machine with the server, as perf_analyzer would.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import run_load
from modelport.inference.samples import build_samples
from modelport.proto.inference import grpc_service_pb2 as pb

MODELS = {"mlp": ((256,), (1, 32)), "encoder": ((64, 256), (1, 8))}


def floor(repo: Path, model: str, row_shape: tuple[int, ...], batch: int, seconds: float) -> float:
    module = torch.export.load(str(repo / model / "1" / "model.pt2")).module()
    x = torch.randn(batch, *row_shape)
    with torch.inference_mode():
        for _ in range(3):
            module(x)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            module(x)
            calls += 1
    return calls * batch / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(repo: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "modelport.cli", "serve", "inference",
           "--model-repository", str(repo), "--host", "127.0.0.1",
           "--grpc-port", str(port), "--metrics-port", "-1", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    address = f"127.0.0.1:{port}"
    import grpc
    from modelport.proto.inference import grpc_service_pb2_grpc as pbg

    stub = pbg.GRPCInferenceServiceStub(grpc.insecure_channel(address))
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if stub.ServerReady(pb.ServerReadyRequest(), timeout=1).ready:
                return proc, address
        except grpc.RpcError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not become ready: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]


def payload(model: str, row_shape: tuple[int, ...]) -> bytes:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((1, *row_shape), dtype=np.float32)
    tensor = pb.ModelInferRequest.InferInputTensor(name="INPUT", datatype="FP32", shape=data.shape)
    request = pb.ModelInferRequest(
        model_name=model, inputs=[tensor], raw_input_contents=[data.tobytes()]
    )
    return request.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--models", default="mlp,encoder")
    parser.add_argument("--server-args", default="", help="extra flags for `serve inference`")
    parser.add_argument("--loadgen-processes", type=int, default=2)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    repo = build_samples(Path(tempfile.mkdtemp(prefix="bench-models-")), encoder=True)
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for model in args.models.split(","):
        row_shape, (b1, best) = MODELS[model]
        floor1 = floor(repo, model, row_shape, b1, 2.0)
        floor_best = floor(repo, model, row_shape, best, 2.0)
        print(f"{model}: floor {floor1:,.0f}/s at batch {b1}, {floor_best:,.0f}/s at batch {best}")
        proc, address = start_server(repo, args.server_args.split())
        try:
            body = payload(model, row_shape)
            for level in levels:
                runs = [run_load(address, body, concurrency=level, duration=args.duration,
                                 processes=args.loadgen_processes) for _ in range(args.repeats)]  # fmt: skip
                tput = statistics.median(r.throughput for r in runs)
                p50 = statistics.median(r.percentile_ms(50) for r in runs)
                p99 = statistics.median(r.percentile_ms(99) for r in runs)
                errors = sum(r.errors for r in runs)
                rows.append((model, level, tput, p50, p99, tput / floor_best, errors))
                print(f"  c={level}: {tput:,.0f}/s p50 {p50:.2f} ms p99 {p99:.2f} ms", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    print()
    print(
        f"{'model':8} {'conc':>4} {'infer/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'served/floor':>12} {'errors':>6}"
    )
    for model, level, tput, p50, p99, ratio, errors in rows:
        print(
            f"{model:8} {level:>4} {tput:>9,.0f} {p50:>8.2f} {p99:>8.2f} {ratio:>12.2f} {errors:>6}"
        )


if __name__ == "__main__":
    main()
