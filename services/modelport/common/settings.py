"""Typed settings: one frozen dataclass per service, the single source of its flags.

Each field is a setting: `modelport serve <service> --<field-name>` and the
environment variable `MODELPORT_<FIELD_NAME>` (what Helm sets) both reach it,
because the CLI generates its click options from these classes
(`modelport.cli.options.settings_options`). Field metadata carries the help
text and, where the flag is not the field's name, the flag. Nothing here
parses anything: tests and `modelport up` build settings directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

from modelport.common.server import ServerOptions
from modelport.common.tls import TlsFiles
from modelport.errors import InvalidInput

ENV_PREFIX = "MODELPORT_"


def setting(
    default: Any,
    help: str,
    *,
    flag: str = "",
    path: Literal["file", "dir", ""] = "",
    cli: bool = True,
) -> Any:
    """A settings field: its default, its help, and optionally its flag and path kind.

    `cli=False` keeps a field out of the CLI (a knob for tests and embedders).
    """
    metadata = {"help": help, "flag": flag, "path": path, "cli": cli}
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return dataclasses.field(default_factory=lambda: value, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(field: dataclasses.Field[Any]) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def env_of(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]


@dataclass(frozen=True)
class ServerSettings:
    """What every server has: where it listens, its limits, telemetry, TLS and drain."""

    host: str = setting("0.0.0.0", "Address to listen on.")
    grpc_port: int = setting(8001, "gRPC port.")
    metrics_port: int = setting(8002, "Prometheus /metrics port (-1 disables).")
    max_message_mb: int = setting(64, "Largest gRPC message accepted or sent, in MiB.")
    grace_seconds: float = setting(
        25.0, "On SIGTERM, how long in-flight requests may take to finish."
    )
    log_level: LogLevel = setting("info", "Log level.")
    log_format: LogFormat = setting("text", "Log format: text for people, json for pipelines.")
    otlp_endpoint: str = setting("", "OTLP/gRPC collector for traces (none when empty).")
    tls_cert_file: Path | None = setting(
        None,
        "Server certificate chain (PEM); with --tls-key-file the port speaks TLS.",
        path="file",
    )
    tls_key_file: Path | None = setting(None, "Private key (PEM) of --tls-cert-file.", path="file")
    tls_ca_file: Path | None = setting(
        None, "CA bundle (PEM): callers must present a certificate it signed.", path="file"
    )

    def __post_init__(self) -> None:
        # Repeatable settings may be given as lists by code; store them as tuples.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                object.__setattr__(self, field.name, tuple(value))
        _ = self.tls  # a half-given TLS configuration fails here, before anything starts

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * 1024 * 1024

    @property
    def tls(self) -> TlsFiles | None:
        return TlsFiles.of(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)

    def for_worker(self, workers: int) -> Self:
        """The settings of one of `workers` processes sharing the port (see supervisor)."""
        raise InvalidInput(f"this service runs in one process (asked for {workers} workers)")

    def server_options(self, **more: Any) -> ServerOptions:
        return ServerOptions(
            host=self.host,
            port=self.grpc_port,
            max_message_bytes=self.max_message_bytes,
            tls=self.tls,
            **more,
        )


def cli_fields(cls: type[ServerSettings]) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]
