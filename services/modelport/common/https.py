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


def keep_context_fresh(
    context: ssl.SSLContext, files: CertificateFiles, check_seconds: float = 5.0
) -> threading.Thread:
    """For HTTPS servers (/metrics): load rotated files into `context`, which new
    handshakes then use; a broken pair is logged and the old one kept."""

    def watch() -> None:
        signature = files.signature()
        while True:
            time.sleep(check_seconds)
            current = files.signature()
            if current == signature:
                continue
            signature = current
            try:
                files.read()  # checks the pair before the context sees it
                context.load_cert_chain(files.cert_file, files.key_file)
                if files.ca_file is not None:
                    context.load_verify_locations(files.ca_file)
                log.info("metrics TLS certificate reloaded from %s", files.cert_file)
            except (InvalidInput, OSError, ssl.SSLError) as exc:
                log.error("metrics TLS files changed but cannot be used: %s", exc)

    thread = threading.Thread(target=watch, daemon=True, name="metrics-tls-reload")
    thread.start()
    return thread
