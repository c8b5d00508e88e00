"""Server-side TLS from the --tls-* settings, against the real registry server (tier 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from modelport.common.settings import ServerSettings
from modelport.errors import InvalidInput
from modelport.registry.server import RegistrySettings

from tests.registry.registry_servers import ThreadedRegistry
from tests.registry.service_process import SERVICES
from tests.support.certificates import CertFiles, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """Another CA's certificate: a client the server must not trust."""
    return make_certificates(tmp_path_factory.mktemp("other"))


def registry(tmp: Path, certs: CertFiles, *, mutual: bool) -> ThreadedRegistry:
    return ThreadedRegistry(
        RegistrySettings(
            database=f"sqlite:///{tmp / 'registry.db'}",
            blob_dir=tmp / "blobs",
            host="127.0.0.1",
            grpc_port=0,
            tls_cert_file=certs.cert,
            tls_key_file=certs.key,
            tls_ca_file=certs.ca if mutual else None,
        )
    )


@pytest.fixture
def tls_registry(tmp_path: Path, certs: CertFiles) -> Iterator[ThreadedRegistry]:
    server = registry(tmp_path, certs, mutual=False)
    yield server
    server.stop()


@pytest.fixture
def mtls_registry(tmp_path: Path, certs: CertFiles) -> Iterator[ThreadedRegistry]:
    server = registry(tmp_path, certs, mutual=True)
    yield server
    server.stop()


def check(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


def secure(address: str, certs: CertFiles, client: CertFiles | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        certs.ca.read_bytes(),
        client.key.read_bytes() if client else None,
        client.cert.read_bytes() if client else None,
    )
    return grpc.secure_channel(address.replace("127.0.0.1", "localhost"), credentials)


def test_tls_port_answers_tls_and_refuses_plaintext(
    tls_registry: ThreadedRegistry, certs: CertFiles
) -> None:
    with secure(tls_registry.address, certs) as channel:
        assert check(channel) == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(tls_registry.address) as plain:
        with pytest.raises(grpc.RpcError) as error:
            check(plain)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_with_a_ca_only_clients_it_signed_get_in(
    mtls_registry: ThreadedRegistry, certs: CertFiles, other_certs: CertFiles
) -> None:
    with secure(mtls_registry.address, certs, client=certs) as channel:
        assert check(channel) == health_pb2.HealthCheckResponse.SERVING
    for client in (None, other_certs):  # no certificate; one from another CA
        with secure(mtls_registry.address, certs, client=client) as channel:
            with pytest.raises(grpc.RpcError) as error:
                check(channel)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_half_a_tls_configuration_is_refused(certs: CertFiles) -> None:
    with pytest.raises(InvalidInput, match="--tls-cert-file is missing"):
        ServerSettings(tls_key_file=certs.key)
    with pytest.raises(InvalidInput, match="--tls-ca-file needs"):
        ServerSettings(tls_ca_file=certs.ca)


def test_unreadable_certificates_stop_the_process_with_a_message(tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    done = subprocess.run(
        [sys.executable, "-m", "modelport.cli", "serve", "registry", "--host", "127.0.0.1",
         "--grpc-port", "0", "--metrics-port", "-1", "--database",
         f"sqlite:///{tmp_path / 'r.db'}", "--blob-dir", str(tmp_path / "blobs"),
         "--tls-cert-file", str(missing), "--tls-key-file", str(missing)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(SERVICES)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "registry cannot start: --tls-cert-file" in done.stderr
    assert "Traceback" not in done.stderr
