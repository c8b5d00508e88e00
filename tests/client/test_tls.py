"""TLS: the SDK and the load generator verify the server against a given CA."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from modelport.cli.loadtest import loadtest
from modelport.client import InferenceClient, ModelportClientError, TlsOptions
from modelport.loadtest.session import SessionOptions, run_session

from tests.support.toy_oip_server import toy_server_in_thread


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (key, cert), made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


def test_tls_client_and_loadtest_verify_the_server(certificate: tuple[Path, Path]) -> None:
    key, cert = certificate
    a = np.ones((1, 16), np.int32)
    with toy_server_in_thread(tls=(key.read_bytes(), cert.read_bytes())) as (address, _):
        target = address.replace("127.0.0.1", "localhost")
        with InferenceClient(target, tls=TlsOptions(root_certificates=cert)) as client:
            assert client.infer("simple", {"INPUT0": a, "INPUT1": a})["OUTPUT0"].sum() == 32
        # grpcs:// means TLS with the system's CAs, which do not know this certificate.
        with InferenceClient(f"grpcs://{target}", timeout=3) as untrusted:
            with pytest.raises(ModelportClientError) as error:
                untrusted.is_server_live()
            assert error.value.code == grpc.StatusCode.UNAVAILABLE
        report, passed = run_session(
            SessionOptions(
                url=target,
                model="simple",
                random=True,
                concurrency=2,
                duration_s=0.4,
                warmup_s=0.1,
                processes=1,
                tls=TlsOptions(root_certificates=cert),
                live=False,
            )
        )
        # The chart mounts certificates and names them in MODELPORT_TLS_*_FILE variables.
        cli = CliRunner().invoke(
            loadtest,
            ["--url", target, "--model", "simple", "--random", "--concurrency", "1",
             "--duration", "300ms", "--warmup", "0s", "--processes", "1"],
            env={"MODELPORT_TLS_CA_FILE": str(cert)},
        )  # fmt: skip
    assert passed and report["requests"]["ok"] > 0
    assert cli.exit_code == 0, cli.output
