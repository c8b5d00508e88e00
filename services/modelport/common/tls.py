"""TLS for every gRPC port and every internal client, rotating without a restart.

Server (`TlsFiles`, from --tls-cert-file/--tls-key-file/--tls-ca-file):
- cert + key: the port speaks TLS; + CA: callers must also present a client
  certificate signed by that CA (mutual TLS); none: plaintext. Anything else (a
  key without a certificate, a CA without either) is a start-up error naming the
  flags, never a silent fallback to plaintext.
- gRPC calls a fetcher at each new handshake: when the files changed (cert-manager
  renewing a Secret, say) they are read, checked (the key must match the
  certificate) and used from the next handshake on; open connections keep theirs.
  A half-written or mismatched pair is logged and the previous pair kept.

Client (`ClientTlsFiles`, `ChannelMaker`): channel credentials are fixed once a
channel exists, so the maker tells a channel's owner when the files changed and
it should dial again (letting the old channel finish its calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

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
        try:
            return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)
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

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials that pick up rotated files at the next handshake."""
        return reloading_server_credentials(self)


class _Reloader:
    """The fetcher gRPC core threads call at each handshake: cheap unless files changed."""

    def __init__(self, files: TlsFiles, check_seconds: float, clock: Callable[[], float]):
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
    files: TlsFiles,
    check_seconds: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> grpc.ServerCredentials:
    """Server credentials that pick up rotated files at the next handshake."""
    initial = files.configuration()  # a broken configuration at start is an error
    # gRPC's fetcher may return None ("no change"), which its stubs do not say.
    fetch = cast(
        Callable[[], grpc.ServerCertificateConfiguration], _Reloader(files, check_seconds, clock)
    )
    return grpc.dynamic_ssl_server_credentials(
        initial,
        fetch,
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
    """Dials aio channels to upstream services: TLS with `tls` (or with the system's
    CAs for a `grpcs://` address), plaintext otherwise; and says when the client
    files changed since a channel was made, so its owner can dial again."""

    def __init__(
        self, tls: ClientTlsFiles | None = None, options: Sequence[tuple[str, object]] = ()
    ) -> None:
        self.tls = tls
        self.options = list(options) + (tls.channel_options() if tls else [])

    def signature(self) -> Signature:
        return self.tls.signature() if self.tls else ()

    def dial(self, address: str) -> tuple[grpc.aio.Channel, Signature]:
        target, secure = address, False
        for scheme, is_secure in (("grpcs://", True), ("grpc://", False)):
            if address.startswith(scheme):
                target, secure = address[len(scheme) :], is_secure
        signature = self.signature()
        if self.tls is not None:
            credentials = self.tls.credentials()
        elif secure:
            credentials = grpc.ssl_channel_credentials()
        else:
            return grpc.aio.insecure_channel(target, options=self.options), signature
        return grpc.aio.secure_channel(target, credentials, options=self.options), signature

    def changed(self, since: Signature) -> bool:
        return self.tls is not None and self.signature() != since

    async def run_with(
        self,
        address: str,
        use: Callable[[grpc.aio.Channel], Awaitable[None]],
        check_seconds: float = 5.0,
    ) -> bool:
        """`await use(channel)` on a channel to `address`, until it ends (False, or its
        error) or the client files change (True: the caller dials again)."""
        channel, signature = self.dial(address)
        async with channel:
            task = asyncio.ensure_future(use(channel))
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=check_seconds)
                    if not task.done() and self.changed(signature):
                        log.info("client certificate changed: reconnecting to %s", address)
                        return True
                task.result()
                return False
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
