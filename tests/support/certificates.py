"""Test certificates made with the openssl CLI: a CA and one leaf that serves both ends.

As in the chart's Secret, one certificate (SAN = the server name, localhost and
127.0.0.1, usable for server and client auth) is the server's and the client's.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


@dataclass(frozen=True)
class CertFiles:
    ca: Path  # ca.crt
    cert: Path  # tls.crt
    key: Path  # tls.key


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certificates(folder: Path, server_name: str = "modelport.internal") -> CertFiles:
    """ca.crt, tls.crt and tls.key in `folder`, named as in the chart's Secret."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", *EC_KEY, "-keyout", "ca.key", "-out", "ca.crt",
             "-subj", "/CN=modelport test CA", "-days", "1", cwd=folder)  # fmt: skip
    _openssl("req", *EC_KEY, "-keyout", "tls.key", "-out", "tls.csr",
             "-subj", f"/CN={server_name}", cwd=folder)  # fmt: skip
    (folder / "ext.cnf").write_text(
        f"subjectAltName=DNS:{server_name},DNS:localhost,IP:127.0.0.1\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "tls.crt", "-days", "1", "-extfile", "ext.cnf",
             cwd=folder)  # fmt: skip
    return CertFiles(folder / "ca.crt", folder / "tls.crt", folder / "tls.key")
