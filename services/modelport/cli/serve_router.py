"""`modelport serve router`: the front door.

Flags are parsed here only; `serve_router` builds a `RouterApp` and runs it
until SIGTERM, then drains. Heavy imports stay inside the command.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click

from modelport.cli.options import common_server_options, option, split_multi

log = logging.getLogger(__name__)


def build_discovery(
    kind: str,
    endpoints: tuple[str, ...],
    endpoints_file: Path | None,
    dns_names: tuple[str, ...],
    dns_interval: float,
    namespace: str,
    label_selector: str,
) -> Any:
    from modelport.errors import InvalidInput
    from modelport.router import discovery

    try:
        if kind == "static":
            parsed = [discovery.parse_endpoint(e) for e in split_multi(endpoints)]
            if not parsed and endpoints_file is None:
                raise click.UsageError("--discovery static needs --endpoint or --endpoints-file")
            return discovery.StaticDiscovery(parsed, endpoints_file)
        if kind == "dns":
            targets = [discovery.parse_dns_target(t) for t in split_multi(dns_names)]
            if not targets:
                raise click.UsageError("--discovery dns needs --dns-name MODEL=NAME:PORT")
            return discovery.DnsDiscovery(targets, interval=dns_interval)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc)) from None
    from modelport.router.discovery_kubernetes import KubernetesDiscovery

    return KubernetesDiscovery(namespace=namespace, label_selector=label_selector)


def build_policy_source(registry: str) -> Any:
    if not registry:
        return None
    from modelport.router.registry_policies import RegistryPolicySource

    return RegistryPolicySource(registry)


@click.command("router")
@common_server_options(grpc_port=8001)
@option("--registry", default="", help="Registry gRPC address for policies and aliases.")
@option(
    "--discovery",
    "discovery_kind",
    type=click.Choice(["static", "dns", "kubernetes"]),
    default="static",
    help="Where the replicas come from.",
)
@option("--endpoint", multiple=True, help="static: MODEL=HOST:PORT (repeatable).")
@option(
    "--endpoints-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="static: a file of MODEL=HOST:PORT lines, re-read when it changes.",
)
@option("--dns-name", multiple=True, help="dns: MODEL=NAME:PORT of a headless Service.")
@option("--dns-interval", type=float, default=5.0, help="dns: seconds between lookups.")
@option("--namespace", default="", help="kubernetes: namespace to watch (all when empty).")
@option(
    "--label-selector",
    default="modelport.io/model",
    help="kubernetes: selects the EndpointSlices of model Services.",
)
@option("--index-interval", type=float, default=5.0, help="Seconds between index reads.")
@option(
    "--multiplex/--no-multiplex",
    default=False,
    help="Forward over one ModelStreamInfer stream per replica instead of a call per request.",
)
def serve_router(
    host: str,
    grpc_port: int,
    metrics_port: int,
    max_message_mb: int,
    grace_seconds: float,
    log_level: str,
    log_format: str,
    otlp_endpoint: str,
    registry: str,
    discovery_kind: str,
    endpoint: tuple[str, ...],
    endpoints_file: Path | None,
    dns_name: tuple[str, ...],
    dns_interval: float,
    namespace: str,
    label_selector: str,
    index_interval: float,
    multiplex: bool,
) -> None:
    """The front door: one OIP v2 address, requests balanced across replicas."""
    from modelport.common import logs, tracing
    from modelport.common.metrics import serve_metrics
    from modelport.common.server import ServerOptions, install_stop_signals, use_fast_event_loop
    from modelport.router.app import RouterApp

    logs.configure(log_level, log_format)
    tracing.configure("router", otlp_endpoint)
    discovery = build_discovery(
        discovery_kind,
        endpoint,
        endpoints_file,
        dns_name,
        dns_interval,
        namespace,
        label_selector,
    )
    policies = build_policy_source(registry)
    options = ServerOptions(
        host=host, port=grpc_port, max_message_bytes=max_message_mb * 1024 * 1024
    )

    async def run() -> None:
        app = RouterApp(
            discovery,
            policies,
            options,
            index_interval=index_interval,
            metrics=metrics_port >= 0,
            multiplex=multiplex,
        )
        if metrics_port >= 0:
            serve_metrics(host, metrics_port)
        await app.start()
        done = install_stop_signals(lambda: app.stop(grace_seconds))
        await done.wait()
        tracing.shutdown()

    use_fast_event_loop()
    asyncio.run(run())
