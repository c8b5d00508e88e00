"""Static server-side TLS for every gRPC port: a certificate and key, optionally a CA.

- cert + key: the port speaks TLS;
- cert + key + CA: callers must also present a client certificate signed by
  that CA (mutual TLS);
- none: plaintext.
Anything else (a key without a certificate, a CA without either) is a start-up
error naming the flags, never a silent fallback to plaintext. Files are read
once at start; rotation, client-side credentials and TLS on /metrics are left
to later work on this seam.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from modelport.errors import InvalidInput


@dataclass(frozen=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    ca_file: Path | None = None

    @classmethod
    def of(cls, cert: Path | None, key: Path | None, ca: Path | None) -> TlsFiles | None:
        """The files given, checked for consistency; None when TLS is off."""
        if cert is None and key is None:
            if ca is not None:
                raise InvalidInput("--tls-ca-file needs --tls-cert-file and --tls-key-file")
            return None
        if cert is None or key is None:
            missing = "--tls-cert-file" if cert is None else "--tls-key-file"
            raise InvalidInput(f"TLS needs both a certificate and its key: {missing} is missing")
        return cls(Path(cert), Path(key), Path(ca) if ca is not None else None)

    def server_credentials(self) -> grpc.ServerCredentials:
        def read(path: Path, what: str) -> bytes:
            try:
                return path.read_bytes()
            except OSError as exc:
                raise InvalidInput(f"{what} {path}: {exc.strerror or exc}") from None

        chain = read(self.cert_file, "--tls-cert-file")
        key = read(self.key_file, "--tls-key-file")
        ca = read(self.ca_file, "--tls-ca-file") if self.ca_file is not None else None
        try:
            return grpc.ssl_server_credentials(
                [(key, chain)], root_certificates=ca, require_client_auth=ca is not None
            )
        except Exception as exc:  # grpc raises RuntimeError for unusable PEM
            raise InvalidInput(f"TLS certificate or key cannot be used: {exc}") from None

    def ssl_context(self) -> ssl.SSLContext:
        """The same files for an HTTP port (the router's OpenAI API)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
            if self.ca_file is not None:
                context.load_verify_locations(self.ca_file)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise InvalidInput(f"TLS certificate or key cannot be used: {exc}") from None
        return context
