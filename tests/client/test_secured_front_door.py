"""The Python SDK and the CLI's client commands through a secured router, started as
an operator starts it (tests/support/secured_stack.py: real `serve` processes, flags
only, real certificates, keys from `modelport keys api-key`)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from modelport.client.channel import ModelportClientError, TlsOptions
from modelport.client.inference import AsyncInferenceClient, InferenceClient

from tests.support.secured_stack import SecuredStack, StackInfo

X = np.arange(16, dtype=np.int32).reshape(1, 16)
INPUTS = {"INPUT0": X, "INPUT1": X}
MODELPORT = str(Path(sys.executable).parent / "modelport")


@pytest.fixture(scope="module")
def stack(sample_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    running = SecuredStack(tmp_path_factory.mktemp("secured"), sample_repo)
    try:
        yield running.start()
    finally:
        running.stop()


def tls(stack: StackInfo) -> TlsOptions:
    return TlsOptions(stack.ca, stack.client_cert, stack.client_key)


def test_the_sdk_over_mutual_tls_with_an_api_key(stack: StackInfo) -> None:
    with InferenceClient(stack.router, tls=tls(stack), api_key=stack.keys["team-a"]) as client:
        out = client.infer("simple", INPUTS)
        np.testing.assert_array_equal(out["OUTPUT0"], X + X)
        assert [m.name for m in client.repository_index()] == ["simple"]
        with pytest.raises(ModelportClientError) as denied:
            client.infer("mlp", INPUTS)
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "infer" in str(denied.value) and "mlp" in str(denied.value)
    with InferenceClient(stack.router, tls=tls(stack)) as anonymous:
        with pytest.raises(ModelportClientError) as refused:
            anonymous.infer("simple", INPUTS)
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED


async def test_the_asyncio_sdk_streams_through_it(stack: StackInfo) -> None:
    async with AsyncInferenceClient(
        stack.router, tls=tls(stack), api_key=stack.keys["team-a"]
    ) as client:
        out = await client.infer("simple", INPUTS)
        np.testing.assert_array_equal(out["OUTPUT1"], X - X)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MODELPORT, *args], capture_output=True, text=True, timeout=120)


def test_routes_and_loadtest_take_the_tls_flags_and_the_key(stack: StackInfo) -> None:
    flags = ["--tls-ca-file", stack.ca, "--tls-cert-file", stack.client_cert,
             "--tls-key-file", stack.client_key, "--api-key", stack.keys["team-a"]]  # fmt: skip
    routes = cli("routes", "--router", stack.router, "--json", *flags)
    assert routes.returncode == 0, routes.stderr
    assert [m["name"] for m in json.loads(routes.stdout)["models"]] == ["simple"]
    report = cli("loadtest", "--url", stack.router, "--model", "simple", "--random",
                 "--concurrency", "2", "--duration", "1s", "--warmup", "0s",
                 "--processes", "1", "--report", "-", *flags)  # fmt: skip
    assert report.returncode == 0, report.stderr
    requests = json.loads(report.stdout)["requests"]
    assert requests["ok"] > 0 and requests["errors"] == 0
