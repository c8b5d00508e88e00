"""`modelport up`: registry, an inference service per sample model, and the router."""

from __future__ import annotations

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
import openai
import pytest
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc

from tests.generative.test_generative_serving import generation_request, text_of
from tests.inference.requests import mlp_request, output, simple_request

SERVICES = Path(__file__).resolve().parents[2] / "services"
ROUTES = "from modelport.cli.routes import routes; routes(prog_name='modelport routes')"


# The first test of a session to ask for `sample_dir` trains the sample decoder
# (a minute on two idle cores, several on a loaded machine).
@pytest.mark.timeout(420)
def test_up_serves_the_samples_on_one_address(
    sample_repo: Path, sample_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_repo, data / "models")  # already built: no export at start
    shutil.copytree(sample_dir.parent, data / "models" / "tiny-llama")  # trained: no training
    command = [sys.executable, "-m", "modelport.cli", "up", "--data-dir", str(data),
               "--grpc-port", "0", "--registry-port", "0", "--training-port", "0",
               "--http-port", "0", "--metrics-port", "-1", "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(SERVICES)}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stderr is not None
        address = registry = openai_url = ""
        while not address:
            line = process.stderr.readline()
            assert line, "modelport up exited"
            found = re.search(
                r"router on (\S+:\d+).*registry on (\S+:\d+);.*OpenAI API on (\S+/v1)", line
            )
            address, registry, openai_url = found.groups() if found else ("", "", "")
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            deadline = time.monotonic() + 30
            while not all(
                stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=5).ready
                for name in ("simple", "mlp", "tiny-llama")
            ):
                assert time.monotonic() < deadline, "models never became ready at the router"
                time.sleep(0.1)
            a = np.arange(16, dtype=np.int32).reshape(1, 16)
            answer = stub.ModelInfer(simple_request(a, a), timeout=10)
            np.testing.assert_array_equal(output(answer, "OUTPUT0", np.int32), 2 * a)
            x = np.zeros((2, 256), dtype=np.float32)
            answer = stub.ModelInfer(mlp_request(x), timeout=10)
            assert output(answer, "OUTPUT", np.float32).shape == (2, 16)
            index = stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=5)
            # One READY entry per model: replicas that only have the other model on
            # disk ("unloaded") do not show through the router.
            assert sorted((m.name, m.version, m.state) for m in index.models) == [
                ("mlp", "1", "READY"),
                ("simple", "1", "READY"),
                ("tiny-llama", "1", "READY"),
            ]
            # The generative sample streams over gRPC and over the OpenAI API.
            call = stub.ModelStreamInfer(
                iter(
                    [
                        generation_request(
                            "The baker",
                            stream=True,
                            model="tiny-llama",
                            max_tokens=8,
                            temperature=0,
                        )
                    ]
                ),
                timeout=30,
            )
            deltas = [answer.infer_response for answer in call]
            assert len(deltas) >= 2 and deltas[-1].parameters["triton_final_response"].bool_param
            api = openai.OpenAI(base_url=openai_url, api_key="unused", max_retries=0)
            chunks = api.completions.create(
                model="tiny-llama", prompt="The baker", max_tokens=8, temperature=0, stream=True
            )
            assert "".join(c.choices[0].text for c in chunks if c.choices) == "".join(
                text_of(d) for d in deltas
            )
            # A policy set with `modelport models policy` reaches the router: an
            # ensemble of mlp with itself answers what mlp answers.
            direct = output(stub.ModelInfer(mlp_request(x), timeout=10), "OUTPUT", np.float32)
            subprocess.run(
                [sys.executable, "-m", "modelport.cli", "models", "policy", "mlp",
                 "--ensemble", "mlp:1,mlp@production", "--registry", registry],
                check=True, env=env, capture_output=True,
            )  # fmt: skip
            routes = ""
            while "ensemble" not in routes:
                assert time.monotonic() < deadline + 10, routes
                listed = subprocess.run(
                    [sys.executable, "-c", ROUTES, "--router", address, "--json"],
                    check=True, env=env, capture_output=True, text=True,
                )  # fmt: skip
                routes = listed.stdout
                time.sleep(0.05)
            mean = output(stub.ModelInfer(mlp_request(x), timeout=10), "OUTPUT", np.float32)
            np.testing.assert_allclose(mean, direct, rtol=1e-5, atol=1e-6)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
