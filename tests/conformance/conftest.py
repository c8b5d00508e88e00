"""A live `modelport serve inference` for the standard Triton client.

This suite runs in its own venv (tritonclient pins protobuf 6.x) and never
imports modelport: the server is the real entrypoint, started as a process.
MODELPORT_BIN names the `modelport` executable of the main venv.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def modelport_bin() -> str:
    path = os.environ.get("MODELPORT_BIN", "")
    if not path or not Path(path).exists():
        pytest.fail("MODELPORT_BIN must name the modelport executable (make conformance sets it)")
    return path


def _serve(modelport_bin: str, repo: Path | None, logs: Path, *flags: str) -> Iterator[str]:
    """Start `modelport serve inference` (or, without a repository, `serve router`) on a
    free port; yield its address once ready."""
    port = _free_port()
    log = open(logs / "server.log", "wb")  # noqa: SIM115
    what = ["inference", "--model-repository", str(repo)] if repo else ["router"]
    process = subprocess.Popen(
        [modelport_bin, "serve", *what,
         "--host", "127.0.0.1", "--grpc-port", str(port), "--metrics-port", "-1", *flags],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"127.0.0.1:{port}"
    client = grpcclient.InferenceServerClient(url)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if client.is_server_ready():
                break
        except Exception:
            pass
        if process.poll() is not None:
            pytest.fail(f"server exited: {Path(log.name).read_text()[-3000:]}")
        time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("server did not become ready in 90 s")
    yield url
    process.terminate()
    process.wait(30)
    log.close()


@pytest.fixture(scope="session")
def samples_repo(modelport_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("conformance") / "models"
    subprocess.run([modelport_bin, "samples", str(repo)], check=True, capture_output=True)
    return repo


@pytest.fixture(scope="session")
def server_url(
    modelport_bin: str, samples_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    yield from _serve(
        modelport_bin, samples_repo, tmp_path_factory.mktemp("logs"),
        "--model-control-mode", "explicit", "--load-model", "simple", "--load-model", "mlp",
    )  # fmt: skip


@pytest.fixture(scope="session")
def triton_url(modelport_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The torch equivalents of Triton's example models, served with shared memory on."""
    repo = tmp_path_factory.mktemp("triton") / "models"
    subprocess.run([modelport_bin, "samples", "--triton", "all", str(repo)], check=True,
                   capture_output=True)  # fmt: skip
    yield from _serve(
        modelport_bin, repo, tmp_path_factory.mktemp("triton-logs"),
        "--model-control-mode", "explicit", "--load-model", "*", "--allow-shared-memory",
    )  # fmt: skip


@pytest.fixture(scope="session")
def triton_router_url(
    modelport_bin: str, triton_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`modelport serve router` in front of the Triton example models' server."""
    client = grpcclient.InferenceServerClient(triton_url)
    models = [m.name for m in client.get_model_repository_index().models]
    client.close()
    endpoints = [flag for m in models for flag in ("--endpoint", f"{m}={triton_url}")]
    yield from _serve(
        modelport_bin, None, tmp_path_factory.mktemp("router-logs"),
        "--discovery", "static", *endpoints,
    )  # fmt: skip


@pytest.fixture
def triton(triton_url: str) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(triton_url)
    yield client
    client.close()


@pytest.fixture
def client(server_url: str) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(server_url)
    yield client
    client.close()
