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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

from modelport.auth.gate import AuthSettings
from modelport.common.server import ServerOptions
from modelport.common.tls import ClientTlsFiles, TlsFiles
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

    host: str = setting(
        "", "Address to listen on (default: 127.0.0.1, or 0.0.0.0 when running in a pod)."
    )
    grpc_port: int = setting(8001, "gRPC port.")
    metrics_port: int = setting(8002, "Prometheus /metrics port (-1 disables).")
    max_message_mb: int = setting(64, "Largest gRPC message accepted or sent, in MiB.")
    grace_seconds: float = setting(
        25.0, "On SIGTERM, how long in-flight requests may take to finish."
    )
    log_level: LogLevel = setting("info", "Log level.")
    log_format: LogFormat = setting("text", "Log format: text for people, json for pipelines.")
    otlp_endpoint: str = setting("", "OTLP/gRPC collector for traces (none when empty).")
    metrics_tls: bool = setting(
        False,
        "Serve /metrics over HTTPS with the --tls-* files (client certificates required "
        "when --tls-ca-file is given).",
    )
    reflection: bool = setting(
        True, "Serve gRPC reflection (grpcurl without the protos); the chart turns it off."
    )
    tls_cert_file: Path | None = setting(
        None,
        "Server certificate chain (PEM); with --tls-key-file the port speaks TLS.",
        path="file",
    )
    tls_key_file: Path | None = setting(None, "Private key (PEM) of --tls-cert-file.", path="file")
    tls_ca_file: Path | None = setting(
        None, "CA bundle (PEM): callers must present a certificate it signed.", path="file"
    )
    # -- who may call (see modelport.auth); all off unless a policy file is given --
    auth_policy_file: Path | None = setting(
        None,
        "Authorization policy (YAML): turns on authentication and deny-by-default "
        "authorization of every RPC.",
        path="file",
    )
    api_keys_file: Path | None = setting(
        None,
        "API keys (YAML of salted hashes, e.g. a mounted Secret); re-read on change.",
        path="file",
    )
    jwks_file: Path | None = setting(
        None, "JWKS (JSON) whose keys sign bearer JWTs; re-read on change.", path="file"
    )
    jwks_url: str = setting("", "URL of the identity provider's JWKS (instead of --jwks-file).")
    jwt_issuer: str = setting("", "Required `iss` of bearer JWTs.")
    jwt_audience: str = setting("", "Required `aud` of bearer JWTs.")
    jwt_leeway_seconds: float = setting(30.0, "Clock skew allowed on JWT exp/nbf/iat.")
    jwt_tenant_claim: str = setting("tenant", "JWT claim naming the caller's tenant.")
    jwt_roles_claim: str = setting("roles", "JWT claim listing the caller's roles.")
    allowed_peers: tuple[str, ...] = setting(
        (),
        "Serve only callers whose client certificate has a matching SAN (pattern, "
        "repeatable; needs --tls-ca-file), e.g. the router's identity.",
        flag="--allowed-peer",
    )

    def __post_init__(self) -> None:
        # Repeatable settings may be given as lists by code; store them as tuples.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                object.__setattr__(self, field.name, tuple(value))
        _ = self.tls  # a half-given TLS configuration fails here, before anything starts
        if not self.host:
            # Plaintext on every interface only where a pod's network policy applies.
            in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
            object.__setattr__(self, "host", "0.0.0.0" if in_pod else "127.0.0.1")
        if self.allowed_peers and self.tls_ca_file is None:
            raise InvalidInput("--allowed-peer needs --tls-ca-file (client certificates)")
        _ = self.auth  # an incomplete JWT configuration fails here too
        if self.metrics_tls and self.tls is None:
            raise InvalidInput("--metrics-tls needs --tls-cert-file and --tls-key-file")
        if isinstance(self, UpstreamSettings):
            _ = self.upstream_tls

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * 1024 * 1024

    @property
    def tls(self) -> TlsFiles | None:
        return TlsFiles.of(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)

    @property
    def auth(self) -> AuthSettings | None:
        """Where identities and the policy come from; None: no access control."""
        if self.auth_policy_file is None:
            if self.api_keys_file or self.jwks_file or self.jwks_url:
                raise InvalidInput("API keys and JWTs need --auth-policy-file (who may do what)")
            return None
        settings = AuthSettings(
            policy_file=self.auth_policy_file,
            api_keys_file=self.api_keys_file,
            jwks_file=self.jwks_file,
            jwks_url=self.jwks_url or None,
            jwt_issuer=self.jwt_issuer,
            jwt_audience=self.jwt_audience,
            jwt_leeway_seconds=self.jwt_leeway_seconds,
            jwt_tenant_claim=self.jwt_tenant_claim,
            jwt_roles_claim=self.jwt_roles_claim,
        )
        settings.jwt_settings()  # checks issuer/audience/JWKS go together
        return settings

    def for_worker(self, workers: int) -> Self:
        """The settings of one of `workers` processes sharing the port (see supervisor)."""
        raise InvalidInput(f"this service runs in one process (asked for {workers} workers)")

    def server_options(self, **more: Any) -> ServerOptions:
        return ServerOptions(
            host=self.host,
            port=self.grpc_port,
            max_message_bytes=self.max_message_bytes,
            tls=self.tls,
            reflection=self.reflection,
            **more,
        )


@dataclass(frozen=True)
class UpstreamSettings:
    """How a service dials the services it depends on (router → replicas and registry,
    inference → registry): TLS with this CA, mutual TLS with this certificate."""

    upstream_tls_ca_file: Path | None = setting(
        None,
        "CA bundle (PEM) to verify upstream servers with: turns on TLS to them.",
        path="file",
    )
    upstream_tls_cert_file: Path | None = setting(
        None, "Client certificate (PEM) presented upstream (mutual TLS).", path="file"
    )
    upstream_tls_key_file: Path | None = setting(
        None, "Private key (PEM) of --upstream-tls-cert-file.", path="file"
    )
    upstream_tls_server_name: str = setting(
        "", "Name upstream certificates are checked against, if not the address's host."
    )

    @property
    def upstream_tls(self) -> ClientTlsFiles | None:
        if self.upstream_tls_ca_file is None:
            if self.upstream_tls_cert_file or self.upstream_tls_key_file:
                raise InvalidInput("--upstream-tls-cert-file needs --upstream-tls-ca-file")
            return None
        return ClientTlsFiles(
            self.upstream_tls_ca_file,
            self.upstream_tls_cert_file,
            self.upstream_tls_key_file,
            self.upstream_tls_server_name,
        )


def cli_fields(cls: type[ServerSettings]) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]
