"""Flags that also read `MODELPORT_<FLAG>` from the environment (what Helm sets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def env_name(flag: str) -> str:
    return "MODELPORT_" + flag.lstrip("-").replace("-", "_").upper()


def option(flag: str, *more: str, **kwargs: Any) -> Callable[[Any], Any]:
    """`click.option` whose value may come from MODELPORT_<FLAG>.

    For repeatable flags the variable holds space- or comma-separated values.
    """
    kwargs.setdefault("envvar", env_name(flag))
    kwargs.setdefault("show_envvar", True)
    kwargs.setdefault("show_default", True)
    return click.option(flag, *more, **kwargs)


def split_multi(values: tuple[str, ...]) -> list[str]:
    """Flatten repeatable values that may also be comma-separated."""
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def common_server_options(grpc_port: int, metrics_port: int = 8002) -> Callable[[Any], Any]:
    """--host, --grpc-port, --metrics-port, --max-message-mb, logging and tracing flags."""

    def decorate(func: Any) -> Any:
        for opt in reversed(
            [
                option("--host", default="0.0.0.0", help="Address to listen on."),
                option("--grpc-port", type=int, default=grpc_port, help="gRPC port."),
                option(
                    "--metrics-port",
                    type=int,
                    default=metrics_port,
                    help="Prometheus /metrics port (-1 disables).",
                ),
                option(
                    "--max-message-mb",
                    type=int,
                    default=64,
                    help="Largest gRPC message accepted or sent, in MiB.",
                ),
                option(
                    "--grace-seconds",
                    type=float,
                    default=25.0,
                    help="On SIGTERM, how long in-flight requests may take to finish.",
                ),
                option(
                    "--log-level",
                    type=click.Choice(["debug", "info", "warning", "error"]),
                    default="info",
                ),
                option("--log-format", type=click.Choice(["text", "json"]), default="text"),
                option(
                    "--otlp-endpoint",
                    default="",
                    help="OTLP/gRPC collector for traces (none when empty).",
                ),
            ]
        ):
            func = opt(func)
        return func

    return decorate
