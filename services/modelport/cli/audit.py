"""`modelport audit`: the registry's audit trail (writes and model-control calls)."""

from __future__ import annotations

import time
from typing import Any

import click

from modelport.cli.loadtest import SECONDS
from modelport.cli.models_common import common, registry_client
from modelport.cli.output import print_json, table, to_dict

COLUMNS = ["time", "tenant", "operation", "model", "version", "outcome", "code", "peer"]


def audit_rows(events: list[Any]) -> list[list[Any]]:
    return [
        [
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.time.ToNanoseconds() / 1e9)),
            e.tenant or "(anonymous)",
            e.operation,
            e.model,
            e.version,
            e.outcome,
            e.code,
            e.peer,
        ]
        for e in events
    ]


@click.command("audit")
@click.option("--model", default="", help="Only events about this model.")
@click.option("--tenant", default="", help="Only events of this tenant.")
@click.option("--action", default="", help="Only this action (push, alias, delete, …).")
@click.option(
    "--outcome", type=click.Choice(["", "ok", "denied", "failed"]), default="", help="Filter."
)
@click.option("--since", type=SECONDS, default=None, help="Only the last … (e.g. 1h, 30m).")
@click.option("--limit", type=int, default=100, help="At most this many (newest first).")
@common
def audit(
    model: str,
    tenant: str,
    action: str,
    outcome: str,
    since: float | None,
    limit: int,
    registry: str,
    as_json: bool,
) -> None:
    """Who did what to which model, from where, and how it ended (newest first)."""
    with registry_client(registry) as client:
        events = client.audit_events(
            model=model,
            tenant=tenant,
            action=action,
            outcome=outcome,
            since=time.time() - since if since else None,
            limit=limit,
        )
    if as_json:
        print_json([to_dict(e) for e in events])
        return
    table("audit trail (UTC)", COLUMNS, audit_rows(events))
