"""`modelport routes`: what the router sees, per model."""

from __future__ import annotations

import json
from typing import Any

import click

from modelport.cli.connection import Connection, connection_options
from modelport.cli.options import option


@click.command("routes")
@option("--router", "address", default="127.0.0.1:8001", help="Router gRPC address.")
@option("--model", default="", help="Only this model.")
@option("--json", "as_json", is_flag=True, default=False, help="Print JSON.")
@connection_options
def routes(address: str, model: str, as_json: bool, connection: Connection) -> None:
    """Per model: the replicas, their versions and in-flight counts, and the policy."""
    import grpc
    from google.protobuf.json_format import MessageToDict

    from modelport.client.channel import sync_channel
    from modelport.proto.modelport.router.v1 import router_pb2, router_pb2_grpc

    with sync_channel(address, connection.tls, connection.api_key) as channel:
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
    table.columns[0].no_wrap = table.columns[2].no_wrap = True  # names are copied whole
    table.columns[1].max_width = 40  # the policy notes wrap instead
    for route in answer.models:
        policy = describe_policy(route.policy)
        if route.aliases:
            policy += "\n" + " ".join(f"{k}→{v}" for k, v in sorted(route.aliases.items()))
        for alias, target in sorted(route.waiting.items()):
            policy += f"\n{alias}→{target} waits for a ready replica"
        if route.unserved_aliases:
            names = ", ".join(route.unserved_aliases)
            policy += f"\nno ready replica for {names}: its traffic stays where it is served"
        if route.held:
            policy += f"\n{route.held} held (scaling from zero)"
        for load in route.loading:
            policy += (
                f"\n{load.address}: {load.phase.lower().replace('_', '-')} v{load.version or '?'}"
                f" ({load.phase_seconds:.1f} s, {load.total_seconds:.1f} s in all)"
            )
        if not route.replicas and not route.pool:
            table.add_row(route.name, policy, "-", "-", "no replicas", "0", "0")
        for index, copy in enumerate(route.pool):
            first = index == 0 and not route.replicas
            table.add_row(
                route.name if first else "",
                policy if first else "",
                f"{copy.address} (pool)",
                f"{copy.size_bytes / 2**20:.1f} MiB",
                copy.state.lower(),
                str(copy.in_flight),
                f"{route.pool_hits} hit/{route.pool_misses} miss" if index == 0 else "",
            )
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
    console = wide_enough(Console(), table)
    console.print(table)
    if answer.pool_replicas:
        pools = Table("pool replica", "memory used / budget", "models", "hits", "loads",
                      "evictions", "mean load")  # fmt: skip
        for r in answer.pool_replicas:
            mean = f"{r.load_seconds / r.loads:.2f} s" if r.loads else "-"
            pools.add_row(
                r.address, f"{r.used_bytes / 2**20:.0f} / {r.budget_bytes / 2**20:.0f} MiB",
                str(r.models), str(r.hits), str(r.loads), str(r.evictions), mean,
            )  # fmt: skip
        wide_enough(console, pools).print(pools)


def wide_enough(console: Any, table: Any) -> Any:
    """The console, or one as wide as the table: addresses are what an operator
    copies, so a narrow terminal (or a pipe's 80 columns) soft-wraps long lines
    rather than the table cutting an address or dropping columns."""
    from rich.console import Console

    needed = console.measure(table, options=console.options.update_width(1 << 16)).maximum
    return console if needed <= console.width else Console(width=needed)
