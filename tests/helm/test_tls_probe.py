"""The in-container health probe the chart uses with TLS (kubelet's gRPC probes cannot
speak TLS) really checks a TLS gRPC health service: run the rendered script against a
mutual-TLS server on loopback with certificates made here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.helm.helmchart import RELEASE, Render, named, scenario

SERVER_NAME = "modelport.internal"  # tls.serverName in the postgresql-tls scenario


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.crt, tls.crt, tls.key as in the chart's Secret (one cert serves both ends)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    out = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=ca",
            "-days", "1", cwd=out)  # fmt: skip
    openssl("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", f"/CN={SERVER_NAME}",
            cwd=out)  # fmt: skip
    (out / "ext.cnf").write_text(
        f"subjectAltName=DNS:{SERVER_NAME}\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "tls.crt", "-days", "1", "-extfile", "ext.cnf",
            cwd=out)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def health_server(tls_dir: Path) -> Iterator[tuple[int, health.HealthServicer]]:
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [((tls_dir / "tls.key").read_bytes(), (tls_dir / "tls.crt").read_bytes())],
        root_certificates=(tls_dir / "ca.crt").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield port, servicer
    server.stop(grace=None)


@pytest.fixture(scope="module")
def probe_command(render: Render, tls_dir: Path) -> list[str]:
    objects = render(scenario("postgresql-tls"))
    deployment = named(objects, "Deployment", f"{RELEASE}-modelport-model-mlp")
    command: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"][
        "exec"
    ]["command"]
    script = command[2]
    assert "/etc/modelport/tls/" in script
    # Same script, certificates read from this test's directory instead of the Secret mount.
    return [sys.executable, "-c", script.replace("/etc/modelport/tls/", f"{tls_dir}/")]


def run_probe(command: list[str], port: int, service: str) -> int:
    done = subprocess.run(
        [*command, str(port), service, SERVER_NAME], capture_output=True, timeout=30, check=False
    )
    return done.returncode


def test_probe_passes_when_the_model_is_serving(
    probe_command: list[str], health_server: tuple[int, health.HealthServicer]
) -> None:
    port, servicer = health_server
    servicer.set("mlp", health_pb2.HealthCheckResponse.SERVING)
    assert run_probe(probe_command, port, "mlp") == 0
    assert run_probe(probe_command, port, "") == 0  # overall health is SERVING by default


def test_probe_fails_when_not_serving_or_unknown(
    probe_command: list[str], health_server: tuple[int, health.HealthServicer]
) -> None:
    port, servicer = health_server
    servicer.set("draining", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert run_probe(probe_command, port, "draining") != 0
    assert run_probe(probe_command, port, "no-such-model") != 0


def test_probe_fails_against_a_certificate_for_another_name(
    probe_command: list[str], health_server: tuple[int, health.HealthServicer]
) -> None:
    port, _ = health_server
    done = subprocess.run(
        [*probe_command, str(port), "", "someone-else.example"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
