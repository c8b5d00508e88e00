"""RSS of the router (and the replica behind it) under a stream of rejected 60 MB requests.

    .venv/bin/python benchmarks/bench_rejected_rss.py [--requests 40] [--concurrency 4]

Starts `modelport serve inference` (the `simple` sample) and `modelport serve
router` in front of it, as their own processes on loopback. Each request is a
60 MB ModelInferRequest whose raw bytes disagree with its declared shape, so it
is parsed in full and refused with INVALID_ARGUMENT. Prints, per process, the
RSS at baseline (after warm-up), the peak during the burst (sampled every
20 ms), and 1 s and 5 s after the last answer.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from modelport.inference.samples import build_samples
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc

MESSAGE_BYTES = 60 * 1024 * 1024


def rss_mib(pid: int) -> float:
    found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(found.group(1)) / 1024 if found else 0.0


def start(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "modelport.cli", "serve", *args]
    command += ["--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    while True:
        line = process.stderr.readline()
        if not line:
            raise SystemExit(f"{args[0]} exited")
        found = re.search(r"gRPC listening on (127\.0\.0\.1:\d+)", line)
        if found:
            break
    # Keep draining the log so the process never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in process.stderr or []], daemon=True).start()
    return process, found.group(1)


def simple(raw_bytes: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="simple")
    for name in ("INPUT0", "INPUT1"):
        tensor = request.inputs.add(name=name, datatype="INT32")
        tensor.shape.extend([1, 16])
        request.raw_input_contents.append(b"\x01" * raw_bytes)
    return request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    options = parser.parse_args()
    repo = build_samples(Path(tempfile.mkdtemp()) / "models")
    inference, replica = start(["inference", "--model-repository", str(repo),
                                "--model-control-mode", "explicit", "--load-model", "simple"])  # fmt: skip
    router, front = start(["router", "--endpoint", f"simple={replica}"])
    processes = {"router": router, "inference": inference}
    try:
        channel = grpc.insecure_channel(
            front, options=[("grpc.max_send_message_length", 2 * MESSAGE_BYTES)]
        )
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        deadline = time.monotonic() + 120
        while True:
            try:
                stub.ModelInfer(simple(64), timeout=10)
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "the router never answered"
                time.sleep(0.2)
        for _ in range(20):
            stub.ModelInfer(simple(64), timeout=10)
        time.sleep(1)
        baseline = {name: rss_mib(p.pid) for name, p in processes.items()}
        peak = dict(baseline)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for name, p in processes.items():
                    peak[name] = max(peak[name], rss_mib(p.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        big = simple(MESSAGE_BYTES // 2)  # two tensors: 60 MB in all
        codes: dict[str, int] = {}

        def send(_: int) -> None:
            try:
                stub.ModelInfer(big, timeout=60)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            codes[code] = codes.get(code, 0) + 1

        started = time.monotonic()
        with ThreadPoolExecutor(options.concurrency) as pool:
            list(pool.map(send, range(options.requests)))
        burst = time.monotonic() - started
        time.sleep(1)
        after_1s = {name: rss_mib(p.pid) for name, p in processes.items()}
        time.sleep(4)
        after_5s = {name: rss_mib(p.pid) for name, p in processes.items()}
        done.set()
        sampler.join()
        stub.ModelInfer(simple(64), timeout=10)  # still answering
        print(f"{options.requests} x 60 MB rejected requests, concurrency "
              f"{options.concurrency}, {burst:.1f} s; answers: {codes}")  # fmt: skip
        print(
            f"{'process':<10} {'baseline':>9} {'peak':>9} {'after 1 s':>10} {'after 5 s':>10}  MiB"
        )
        for name in processes:
            print(f"{name:<10} {baseline[name]:>9.0f} {peak[name]:>9.0f} "
                  f"{after_1s[name]:>10.0f} {after_5s[name]:>10.0f}")  # fmt: skip
        channel.close()
    finally:
        for p in processes.values():
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
