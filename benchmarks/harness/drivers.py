"""The two load generators: Triton's perf_analyzer (C++) and modelport's own loadtest runner.

Both run closed loop at a fixed concurrency, with requests of `batch` rows, and
report inferences (rows) per second and p50/p99 latency over their measured
window. The server's CPU (its process tree, from /proc) is read around the run
and divided by the requests sent, warm-up included, which is how "CPU per
request" is taken for every target alike.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from modelport.loadtest.report import latency_summary
from modelport.loadtest.runner import LoadSpec, run_load
from modelport.proto.inference import grpc_service_pb2 as pb

from .targets import ROOT, Target, cpu_seconds

PERF_VENV = ROOT / ".venv-perf"
ROW_SHAPES = {"mlp": (256,), "encoder": (64, 256)}


@dataclass
class Measurement:
    target: str
    driver: str
    model: str
    batch: int
    concurrency: int
    infer_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    # role -> CPU µs per request of that role's process tree ("server", "router").
    cpu_us: dict[str, float] = field(default_factory=dict)


def row_shape(model: str) -> tuple[int, ...]:
    if model in ROW_SHAPES:
        return ROW_SHAPES[model]
    if model.startswith("mlp"):
        return ROW_SHAPES["mlp"]
    raise KeyError(model)


def request_bytes(model: str, batch: int) -> bytes:
    data = np.random.default_rng(0).standard_normal((batch, *row_shape(model)), dtype=np.float32)
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="INPUT", datatype="FP32", shape=data.shape)
    request.raw_input_contents.append(data.tobytes())
    return request.SerializeToString()


class CpuWindow:
    def __init__(self, target: Target) -> None:
        self.roles = target.roles
        self.before = {role: cpu_seconds(pid) for role, pid in self.roles.items()}

    def per_request_us(self, requests: int) -> dict[str, float]:
        spent = {role: cpu_seconds(pid) - self.before[role] for role, pid in self.roles.items()}
        return {role: s / max(requests, 1) * 1e6 for role, s in spent.items()}


def loadtest(
    target: Target, model: str, batch: int, concurrency: int, seconds: float, warmup: float = 1.0
) -> Measurement:
    spec = LoadSpec(
        url=target.address,
        requests=[request_bytes(model, batch)],
        concurrency=concurrency,
        duration_s=seconds,
        warmup_s=warmup,
        timeout_s=60,
        processes=min(2, concurrency),
    )
    window = CpuWindow(target)
    result = run_load(spec)
    ok = result.samples.codes == 0
    latency = latency_summary(result.samples.latencies_ns[ok])
    return Measurement(
        target.name,
        "loadtest",
        model,
        batch,
        concurrency,
        infer_per_s=int(ok.sum()) * batch / result.measured_s,
        p50_ms=latency["p50"],
        p99_ms=latency["p99"],
        errors=int((~ok).sum()),
        cpu_us=window.per_request_us(result.all_requests),
    )


def perf_analyzer_available() -> bool:
    return (PERF_VENV / "bin" / "perf_analyzer").exists()


def _input_file(model: str, folder: Path) -> Path:
    """Real values: perf_analyzer's `random` data is raw random bytes (NaN, 3e38)."""
    shape = row_shape(model)
    values = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    path = folder / f"{model}.json"
    path.write_text(
        json.dumps(
            {"data": [{"INPUT": {"content": values.ravel().tolist(), "shape": list(shape)}}]}
        )
    )
    return path


def perf_analyzer(
    target: Target, model: str, batch: int, concurrency: int, seconds: float
) -> Measurement:
    folder = Path(tempfile.mkdtemp(prefix="bench-pa-"))
    report = folder / "out.csv"
    libs = sorted((PERF_VENV / "lib").glob("python3*/site-packages/nvidia/cuda_runtime/lib"))
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(str(p) for p in libs)}
    command = [
        str(PERF_VENV / "bin" / "perf_analyzer"),
        "-m",
        model,
        "-u",
        target.address,
        "-i",
        "grpc",
        "--input-data",
        str(_input_file(model, folder)),
        "-b",
        str(batch),
        "--concurrency-range",
        str(concurrency),
        "--measurement-interval",
        str(int(seconds * 1000)),
        # A shared machine is rarely "stable" to 10%; take the trials it gets.
        "--stability-percentage",
        "999",
        "--max-trials",
        "3",
        "-f",
        str(report),
    ]
    window = CpuWindow(target)
    started = time.monotonic()
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    if run.returncode != 0 or not report.exists():
        raise RuntimeError(
            f"perf_analyzer failed on {target.name}: {run.stdout[-800:]}{run.stderr[-800:]}"
        )
    with report.open() as f:
        row = next(csv.DictReader(f))
    infer_per_s = float(row["Inferences/Second"])
    # perf_analyzer does not say how many requests it sent in all (its trials
    # included): estimate from its throughput over the whole run.
    requests = int(infer_per_s / batch * wall)
    return Measurement(
        target.name,
        "perf_analyzer",
        model,
        batch,
        concurrency,
        infer_per_s=infer_per_s,
        p50_ms=float(row["p50 latency"]) / 1e3,
        p99_ms=float(row["p99 latency"]) / 1e3,
        errors=0,
        cpu_us=window.per_request_us(requests),
    )
