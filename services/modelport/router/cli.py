"""`modelport serve router` and `modelport routes`.

Flags are parsed here only; `serve_router` builds a `RouterApp` and runs it
until SIGTERM, then drains. Heavy imports stay inside the commands.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import click

from modelport.common.cli_options import common_server_options, option, split_multi

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


@click.command("routes")
@option("--router", "address", default="127.0.0.1:8001", help="Router gRPC address.")
@option("--model", default="", help="Only this model.")
@option("--json", "as_json", is_flag=True, default=False, help="Print JSON.")
def routes(address: str, model: str, as_json: bool) -> None:
    """Per model: the replicas, their versions and in-flight counts, and the policy."""
    import grpc
    from google.protobuf.json_format import MessageToDict

    from modelport.proto.modelport.router.v1 import router_pb2, router_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            answer = router_pb2_grpc.RouterAdminStub(channel).ListRoutes(
                router_pb2.ListRoutesRequest(model_name=model), timeout=10
            )
        except grpc.RpcError as exc:
            message = f"router {address}: {exc.code().name}: {exc.details()}"
            raise click.ClickException(message) from None
    if as_json:
        as_dict = MessageToDict(
            answer, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        click.echo(json.dumps(as_dict, indent=2))
        return
    print_routes(answer)


def describe_policy(policy: Any) -> str:
    parts = []
    if policy.split:
        parts.append("split " + ",".join(f"{s.alias}={s.weight}" for s in policy.split))
    if policy.shadow_alias:
        parts.append(f"shadow {policy.shadow_alias}")
    if policy.ensemble_members:
        parts.append("ensemble " + ",".join(policy.ensemble_members))
    if policy.scatter:
        parts.append("scatter")
    return "; ".join(parts) or "default"


def print_routes(answer: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("model", "policy", "replica", "versions", "state", "in flight", "picks")
    for route in answer.models:
        policy = describe_policy(route.policy)
        if route.aliases:
            policy += "\n" + " ".join(f"{k}→{v}" for k, v in sorted(route.aliases.items()))
        if not route.replicas:
            table.add_row(route.name, policy, "-", "-", "no replicas", "0", "0")
        for index, replica in enumerate(route.replicas):
            state = (
                "ejected"
                if replica.ejected
                else "terminating"
                if replica.terminating
                else "ready"
                if replica.ready
                else "not ready"
            )
            table.add_row(
                route.name if index == 0 else "",
                policy if index == 0 else "",
                replica.address,
                ",".join(replica.versions) or "-",
                state,
                str(replica.in_flight),
                str(replica.picks),
            )
    Console().print(table)
