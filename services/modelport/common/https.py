"""HTTPS servers (/metrics) whose certificate rotates without a restart.

Kept free of grpc (the metrics module is imported by cores that must not import it):
the TLS files come in as anything with their paths, `signature()` and `read()`
(`common.tls.TlsFiles`).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from modelport.errors import InvalidInput

log = logging.getLogger(__name__)


class CertificateFiles(Protocol):
    @property
    def cert_file(self) -> Path: ...

    @property
    def key_file(self) -> Path: ...

    @property
    def ca_file(self) -> Path | None: ...

    def signature(self) -> Any: ...

    def read(self) -> Any: ...


def server_context(files: CertificateFiles) -> ssl.SSLContext:
    """A server context of `files` (client certificates required with a CA)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert_file, files.key_file)
    if files.ca_file is not None:
        context.load_verify_locations(files.ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def keep_context_fresh(
    context: ssl.SSLContext, files: CertificateFiles, check_seconds: float = 5.0
) -> threading.Thread:
    """For HTTPS servers (/metrics): serve rotated files from the next handshake on; a
    broken pair is logged and the old one kept. Each rotation builds a fresh context
    and `context`'s SNI callback (run on every ClientHello) moves new handshakes onto
    it, so a CA dropped from the bundle stops being trusted (loading into `context`
    could only add CAs)."""
    current = [context]

    def use_current(connection: Any, server_name: str | None, _: ssl.SSLContext) -> None:
        if current[0] is not context:
            connection.context = current[0]

    context.sni_callback = use_current

    def watch() -> None:
        signature = files.signature()
        while True:
            time.sleep(check_seconds)
            signature_now = files.signature()
            if signature_now == signature:
                continue
            signature = signature_now
            try:
                files.read()  # checks the pair before a context sees it
                current[0] = server_context(files)
                log.info("metrics TLS certificate reloaded from %s", files.cert_file)
            except (InvalidInput, OSError, ssl.SSLError) as exc:
                log.error("metrics TLS files changed but cannot be used: %s", exc)

    thread = threading.Thread(target=watch, daemon=True, name="metrics-tls-reload")
    thread.start()
    return thread
