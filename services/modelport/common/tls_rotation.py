"""Certificates that rotate without a restart, on both ends of a channel.

Server: `reloading_server_credentials` hands gRPC a fetcher that it calls at
each new handshake; when the certificate, key or CA file changed (cert-manager
renewing a Secret, say) the new ones are read, checked (the key must match the
certificate) and used from the next handshake on. Connections already open
keep the certificate they were made with. A half-written or mismatched pair
is logged and the previous pair kept, so a rotation never takes a port down.

Client: channel credentials are fixed once a channel exists, so
`ClientTlsFiles.signature()` tells a channel's owner that the files changed and
it should dial a new channel (and let the old one finish its calls).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from modelport.errors import InvalidInput

log = logging.getLogger(__name__)

Signature = tuple[tuple[int, int, int], ...]


def files_signature(*paths: Path | None) -> Signature:
    """What `stat` says of each file, through symlinks (a Secret update swaps one)."""
    result = []
    for path in paths:
        if path is None:
            result.append((0, 0, 0))
            continue
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            result.append((-1, -1, -1))
            continue
        result.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(result)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{what} {path}: {exc.strerror or exc}") from None


def check_pair(chain: bytes, key: bytes, what: str = "TLS") -> None:
    """The key belongs to the chain's first certificate (a rotation caught between
    writing the two files fails here, not in a handshake)."""
    try:
        certificate = x509.load_pem_x509_certificates(chain)[0]
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, IndexError, TypeError) as exc:
        raise InvalidInput(f"{what}: certificate or key is not usable PEM: {exc}") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(
        serialization.Encoding.DER, public
    ) != private.public_key().public_bytes(serialization.Encoding.DER, public):
        raise InvalidInput(f"{what}: the private key does not belong to the certificate")


@dataclass(frozen=True)
class ServerTlsFiles:
    cert_file: Path
    key_file: Path
    ca_file: Path | None = None

    def signature(self) -> Signature:
        return files_signature(self.cert_file, self.key_file, self.ca_file)

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        chain = _read(self.cert_file, "--tls-cert-file")
        key = _read(self.key_file, "--tls-key-file")
        ca = _read(self.ca_file, "--tls-ca-file") if self.ca_file is not None else None
        check_pair(chain, key, f"--tls-cert-file {self.cert_file}")
        return chain, key, ca

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        chain, key, ca = self.read()
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)


class _Reloader:
    """The fetcher gRPC core threads call at each handshake: cheap unless files changed."""

    def __init__(self, files: ServerTlsFiles, check_seconds: float, clock: Callable[[], float]):
        self.files = files
        self.check_seconds = check_seconds
        self.clock = clock
        self.signature = files.signature()
        self.failed: Signature | None = None
        self.checked = clock()
        self.lock = threading.Lock()

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self.lock:
            if self.clock() - self.checked < self.check_seconds:
                return None
            self.checked = self.clock()
            signature = self.files.signature()
            if signature in (self.signature, self.failed):
                return None
            try:
                configuration = self.files.configuration()
            except InvalidInput as exc:
                self.failed = signature  # logged once per broken version of the files
                log.error("TLS files changed but cannot be used (keeping the old ones): %s", exc)
                return None
            self.signature = signature
            log.info("TLS certificate reloaded from %s", self.files.cert_file)
            return configuration


def reloading_server_credentials(
    files: ServerTlsFiles,
    check_seconds: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> grpc.ServerCredentials:
    """Server credentials that pick up rotated files at the next handshake."""
    initial = files.configuration()  # a broken configuration at start is an error
    return grpc.dynamic_ssl_server_credentials(
        initial,
        _Reloader(files, check_seconds, clock),
        require_client_authentication=files.ca_file is not None,
    )


@dataclass(frozen=True)
class ClientTlsFiles:
    """What an internal client dials with: the CA to verify servers against and,
    for mTLS, its own certificate; `server_name` overrides the name checked."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str = ""

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise InvalidInput("a client certificate needs both its file and its key file")

    def signature(self) -> Signature:
        return files_signature(self.ca_file, self.cert_file, self.key_file)

    def credentials(self) -> grpc.ChannelCredentials:
        ca = _read(self.ca_file, "CA file") if self.ca_file else None
        chain = key = None
        if self.cert_file is not None and self.key_file is not None:
            chain = _read(self.cert_file, "client certificate")
            key = _read(self.key_file, "client key")
            check_pair(chain, key, f"client certificate {self.cert_file}")
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=chain
        )

    def channel_options(self) -> list[tuple[str, object]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


class ChannelMaker:
    """Dials aio channels (plaintext when `tls` is None) and says when the client
    files changed since a channel was made, so its owner can dial again."""

    def __init__(self, tls: ClientTlsFiles | None, options: list[tuple[str, object]]) -> None:
        self.tls = tls
        self.options = list(options) + (tls.channel_options() if tls else [])

    def signature(self) -> Signature:
        return self.tls.signature() if self.tls else ()

    def dial(self, target: str) -> tuple[grpc.aio.Channel, Signature]:
        signature = self.signature()
        if self.tls is None:
            return grpc.aio.insecure_channel(target, options=self.options), signature
        channel = grpc.aio.secure_channel(target, self.tls.credentials(), options=self.options)
        return channel, signature

    def changed(self, since: Signature) -> bool:
        return self.tls is not None and self.signature() != since
