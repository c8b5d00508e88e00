"""TLS: the SDK and the load generator verify the server against a given CA."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from modelport.cli.loadtest import loadtest
from modelport.client import InferenceClient, ModelportClientError, TlsOptions
from modelport.common.tls import TlsFiles
from modelport.loadtest.session import SessionOptions, run_session

from tests.support.certificates import CertFiles, make_certificates
from tests.support.toy_oip_server import toy_server_in_thread


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """A CA and a certificate it signed for localhost."""
    return make_certificates(tmp_path_factory.mktemp("tls"), "localhost")


def test_tls_client_and_loadtest_verify_the_server(certificate: CertFiles) -> None:
    ca = certificate.ca
    a = np.ones((1, 16), np.int32)
    with toy_server_in_thread(tls=TlsFiles(certificate.cert, certificate.key)) as (address, _):
        target = address.replace("127.0.0.1", "localhost")
        with InferenceClient(target, tls=TlsOptions(root_certificates=ca)) as client:
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
                tls=TlsOptions(root_certificates=ca),
                live=False,
            )
        )
        # The chart mounts certificates and names them in MODELPORT_TLS_*_FILE variables.
        cli = CliRunner().invoke(
            loadtest,
            ["--url", target, "--model", "simple", "--random", "--concurrency", "1",
             "--duration", "300ms", "--warmup", "0s", "--processes", "1"],
            env={"MODELPORT_TLS_CA_FILE": str(ca)},
        )  # fmt: skip
    assert passed and report["requests"]["ok"] > 0
    assert cli.exit_code == 0, cli.output
