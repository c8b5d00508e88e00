"""How a CLI command reaches a server: TLS (a CA, a client certificate for mutual
TLS) and the caller's API key or bearer token, the same flags on every command.

The flags read the variables the chart sets in pods (MODELPORT_TLS_*_FILE,
MODELPORT_API_KEY), so a Job that mounts the certificates needs no arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelport.cli.options import option

if TYPE_CHECKING:
    from modelport.client import TlsOptions


@dataclass(frozen=True)
class Connection:
    tls: TlsOptions | None
    api_key: str | None


def tls_options(tls: bool, ca: str, cert: str, key: str, server_name: str) -> TlsOptions | None:
    from modelport.client import TlsOptions

    if not (tls or ca or cert or key):
        return None
    return TlsOptions(
        root_certificates=Path(ca) if ca else None,
        certificate_chain=Path(cert) if cert else None,
        private_key=Path(key) if key else None,
        server_name_override=server_name,
    )


def connection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the flags and passes one `connection: Connection` argument instead."""

    @option("--tls", is_flag=True, help="Use TLS (implied by grpcs:// or any certificate flag).")
    @option("--tls-ca-file", default="", help="CA bundle (PEM) to verify the server.")
    @option("--tls-cert-file", default="", help="Client certificate (PEM) for mutual TLS.")
    @option("--tls-key-file", default="", help="Client key (PEM) for mutual TLS.")
    @option("--tls-server-name", default="", help="Expected server name, if not the host.")
    @option(
        "--api-key",
        default="",
        help="API key or bearer JWT sent on every call.",
        show_default=False,
    )
    @functools.wraps(func)
    def wrapper(
        *args: Any,
        tls: bool,
        tls_ca_file: str,
        tls_cert_file: str,
        tls_key_file: str,
        tls_server_name: str,
        api_key: str,
        **kwargs: Any,
    ) -> Any:
        connection = Connection(
            tls_options(tls, tls_ca_file, tls_cert_file, tls_key_file, tls_server_name),
            api_key or None,
        )
        return func(*args, connection=connection, **kwargs)

    return wrapper
