"""/metrics over HTTPS with the service's own certificate (--metrics-tls): client
certificates required when there is a CA, rotated files used without a restart."""

from __future__ import annotations

import http.client
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from modelport.common.metrics import serve_metrics
from modelport.common.tls import TlsFiles

from tests.support.certificates import CertificateAuthority, localhost_server


def scrape(port: int, ca: Path, client: tuple[Path, Path] | None) -> tuple[str, str]:
    """(body, common name of the certificate the server presented)."""
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=5)
    try:
        connection.request("GET", "/metrics")
        der = connection.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        body = connection.getresponse().read().decode()
    finally:
        connection.close()
    name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return body, name


def test_metrics_over_mutual_tls_and_rotation(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    ca_file = ca.write(tmp_path)
    cert, key = localhost_server(ca, "first").write(tmp_path, "server")
    client = ca.issue("prometheus", client=True, server=False).write(tmp_path, "client")
    files = TlsFiles(cert, key, ca_file)
    port = serve_metrics("127.0.0.1", 0, files)
    body, name = scrape(port, ca_file, client)
    assert "CN=first" in name and ("# HELP" in body or body == "")
    with pytest.raises((ssl.SSLError, OSError)):
        scrape(port, ca_file, None)  # no client certificate
    localhost_server(ca, "second").write(tmp_path, "server")
    deadline = time.monotonic() + 15
    while "CN=second" not in scrape(port, ca_file, client)[1]:
        assert time.monotonic() < deadline, "rotated certificate not picked up"
        time.sleep(0.5)
