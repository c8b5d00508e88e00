"""The issue's done-when, through the front door: against `modelport up`, the CLI's
`models derive mlp@production --quantize int8-dynamic --eval data.npz
--max-accuracy-drop 0.01 --alias canary` runs a job in the registry's worker pool that
stores a measured, gated child; the stack's inference service loads it as the canary,
and the router's split sends it a slice of real traffic."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import torch
from modelport.inference.samples import mlp_module
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc

from tests.inference.requests import mlp_request

SERVICES = Path(__file__).resolve().parents[2] / "services"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelport.cli", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_derive_gate_alias_and_router_canary(sample_repo: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_repo, data / "models")
    x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    with torch.no_grad():
        np.savez(tmp_path / "data.npz", INPUT=x, OUTPUT=mlp_module()(torch.from_numpy(x)).numpy())
    env = {**os.environ, "PYTHONPATH": str(SERVICES), "MODELPORT_DERIVE_TIMING_SECONDS": "0.2"}
    command = [sys.executable, "-m", "modelport.cli", "up", "--data-dir", str(data),
               "--grpc-port", "0", "--registry-port", "0", "--training-port", "0",
               "--http-port", "-1", "--no-generative-sample", "--metrics-port", "-1",
               "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stderr is not None
        address = registry = ""
        while not address:
            line = process.stderr.readline()
            assert line, "modelport up exited"
            found = re.search(r"router on (\S+:\d+).*registry on (\S+:\d+)", line)
            address, registry = found.groups() if found else ("", "")

        derived = cli(env, "models", "derive", "mlp@production", "--quantize", "int8-dynamic",
                      "--eval", str(tmp_path / "data.npz"), "--max-accuracy-drop", "0.01",
                      "--alias", "canary", "--registry", registry, "--json")  # fmt: skip
        assert derived.returncode == 0, derived.stderr
        job = json.loads(derived.stdout)
        assert (job["state"], job["verdict"], job["child_version"]) == (
            "SUCCEEDED",
            "accepted",
            "2",
        )
        metrics = job["metrics"]
        assert metrics["parent.accuracy"] == 0.0 < metrics["accuracy"] <= 0.01
        assert metrics["size_bytes"] < 0.35 * metrics["parent.size_bytes"]  # int8 of fp32

        shown = cli(env, "models", "show", "mlp", "--registry", registry, "--json")
        versions = {v["version"]: v for v in json.loads(shown.stdout)["versions"]}
        child = versions["2"]
        assert child["status"] == "accepted" and child["aliases"] == ["canary"]
        assert child["lineage"]["parent"] == "mlp:1"
        assert child["lineage"]["method"] == "int8-dynamic"
        assert child["lineage"]["parameters"]["quantized_layers"] == "3/3"
        compared = cli(env, "models", "compare", "mlp:1", "mlp@canary", "--registry", registry,
                       "--plot", str(tmp_path / "compare.png"))  # fmt: skip
        assert compared.returncode == 0, compared.stderr
        assert "int8-dynamic" in compared.stdout and (tmp_path / "compare.png").stat().st_size

        split = cli(env, "models", "policy", "mlp", "--split", "production=50,canary=50",
                    "--registry", registry)  # fmt: skip
        assert split.returncode == 0, split.stderr
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            seen: set[str] = set()
            deadline = time.monotonic() + 60
            session = 0
            while seen != {"1", "2"}:
                assert time.monotonic() < deadline, f"the router sent traffic to {seen} only"
                session += 1
                metadata = (("x-modelport-session", f"s{session}"),)
                answer = stub.ModelInfer(mlp_request(x[:1]), timeout=10, metadata=metadata)
                seen.add(answer.model_version)
                time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
