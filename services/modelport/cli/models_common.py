"""What every `modelport models …` subcommand shares: --registry, --json, one error line."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any

import click

from modelport.cli.connection import Connection, connection_options
from modelport.cli.options import option

DEFAULT_REGISTRY = "localhost:8003"


# The subcommand's TLS and credentials (set by `common`, read by `registry_client`).
_connection: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
    "registry_connection", default=None
)


def common(func: Callable[..., Any]) -> Callable[..., Any]:
    """--registry, TLS, --api-key and --json on every subcommand; gRPC errors become
    one readable line."""

    @option("--registry", default=DEFAULT_REGISTRY, help="Registry gRPC address.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
    @connection_options
    @functools.wraps(func)
    def wrapper(*args: Any, connection: Connection, **kwargs: Any) -> Any:
        from modelport.client.channel import ModelportClientError

        _connection.set(connection)
        try:
            return func(*args, **kwargs)
        except ModelportClientError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def registry_client(registry: str) -> Any:
    from modelport.client.registry import RegistryClient

    connection = _connection.get() or Connection(None, None)
    return RegistryClient(registry, tls=connection.tls, api_key=connection.api_key)


def describe_policy(policy: Any) -> str:
    parts = []
    if policy.split:
        parts.append("split " + ", ".join(f"{w.alias}={w.weight}" for w in policy.split))
    if policy.shadow_alias:
        parts.append(f"shadow {policy.shadow_alias}")
    kind = policy.WhichOneof("kind")
    if kind == "ensemble":
        parts.append("ensemble " + ", ".join(policy.ensemble.members))
    elif kind == "scatter":
        parts.append("scatter")
    return "; ".join(parts) or "none"
