"""`modelport models alias | rollback | history | policy | pool`: where traffic goes."""

from __future__ import annotations

import click

from modelport.cli.models_common import common, connection_of, describe_policy, registry_client
from modelport.cli.options import option
from modelport.cli.output import emit, pairs, print_json, table, to_dict, when


@click.command("alias")
@click.argument("name")
@click.argument("version", type=int)
@click.argument("alias")
@click.option(
    "--force",
    is_flag=True,
    help="Even to a version a derive gate rejected, or one with another signature.",
)
@common
def alias(name: str, version: int, alias: str, force: bool, registry: str, as_json: bool) -> None:
    """Point ALIAS of model NAME at VERSION."""
    with registry_client(registry) as client:
        moved = client.set_alias(name, version, alias, force=force)
    before = f" (was {moved.previous_version})" if moved.previous_version else ""
    emit(as_json, moved, f"{name}@{alias} → {moved.version}{before}")


@click.command("rollback")
@click.argument("name")
@click.argument("alias")
@common
def rollback(name: str, alias: str, registry: str, as_json: bool) -> None:
    """Move ALIAS back to the version it pointed at before its last move."""
    with registry_client(registry) as client:
        moved = client.rollback(name, alias)
    emit(
        as_json,
        moved,
        f"{name}@{alias} → {moved.version} (rolled back from {moved.previous_version})",
    )


@click.command("history")
@click.argument("name")
@click.argument("alias", required=False, default="")
@common
def history(name: str, alias: str, registry: str, as_json: bool) -> None:
    """Every move of the model's aliases, oldest first; then who changed the model
    (its audit trail, newest first) where the caller may read it. (--json: the moves;
    the trail as JSON is `modelport audit --model NAME --json`.)"""
    from modelport.client.channel import ModelportClientError

    with registry_client(registry) as client:
        moves = client.alias_history(name, alias)
        if as_json:
            print_json([to_dict(m) for m in moves])
            return
        try:
            events, refused = client.audit_events(model=name), ""
        except ModelportClientError as exc:  # not an admin of the model, or no audit log
            events, refused = [], str(exc)
    rows = [[m.alias, m.version or "(deleted)", m.revision, when(m.moved_at)] for m in moves]
    table(f"{name}: alias history", ["alias", "version", "revision", "moved"], rows)
    if refused:
        click.echo(f"audit trail not shown: {refused}")
    else:
        from modelport.cli.audit import COLUMNS, audit_rows

        table(f"{name}: changes (UTC)", COLUMNS, audit_rows(events))


@click.command("policy")
@click.argument("name")
@click.option("--split", default="", help="ALIAS=WEIGHT,…, e.g. production=90,canary=10.")
@click.option("--shadow", default="", help="Also send a copy of each request to this alias.")
@click.option("--ensemble", default="", help="MODEL[@ALIAS|:VERSION],…: average the outputs.")
@click.option("--scatter", is_flag=True, help="Split batches across replicas.")
@click.option("--clear", is_flag=True, help="Remove the policy.")
@option(
    "--router",
    default="127.0.0.1:8001",
    help="Router asked which aliases ready replicas serve ('' to skip the check).",
)
@common
def policy(
    name: str,
    split: str,
    shadow: str,
    ensemble: str,
    scatter: bool,
    clear: bool,
    router: str,
    registry: str,
    as_json: bool,
) -> None:
    """Show or set model NAME's traffic policy; warn about aliases it names that
    no ready replica serves (their traffic stays where it is served)."""
    from modelport.cli.policy_check import unserved_warnings
    from modelport.client.registry import parse_policy

    if ensemble and scatter:
        raise click.UsageError("--ensemble and --scatter exclude each other")
    if clear and (split or shadow or ensemble or scatter):
        raise click.UsageError("--clear takes no other policy option")
    weights: dict[str, int] = {}
    for alias_name, weight in pairs((split,) if split else (), "--split").items():
        if not weight.isdigit():
            raise click.BadParameter(
                f"weight '{weight}' is not a whole number", param_hint="--split"
            )
        weights[alias_name] = int(weight)
    members = [m.strip() for m in ensemble.split(",") if m.strip()]
    changing = clear or weights or shadow or members or scatter
    with registry_client(registry) as client:
        if changing:
            current = client.set_policy(
                name, parse_policy(weights, shadow_alias=shadow, ensemble=members, scatter=scatter)
            )
        else:
            current = client.get_policy(name)
        source = click.get_current_context().get_parameter_source("router")
        asked = source is not click.core.ParameterSource.DEFAULT
        warnings = unserved_warnings(client, router, connection_of(), name, current, asked=asked)
    emit(as_json, current, f"{name}: {describe_policy(current)} (revision {current.revision})")
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)


@click.command("pool")
@click.argument("name", required=False, default="")
@click.option("--priority", type=int, default=None, help="Eviction priority (lower goes first).")
@click.option(
    "--memory-mb", type=click.FloatRange(min=0), default=None,
    help="MiB the model holds once loaded (0: its archive's size).",
)  # fmt: skip
@click.option("--off", is_flag=True, help="Stop serving the model from the pool.")
@common
def pool(
    name: str,
    priority: int | None,
    memory_mb: float | None,
    off: bool,
    registry: str,
    as_json: bool,
) -> None:
    """Show or set whether the shared pool serves model NAME (no NAME: list pooled models).

    Setting --priority or --memory-mb pools the model; other settings keep their values.
    """
    if off and (priority is not None or memory_mb is not None):
        raise click.UsageError("--off takes no other pool option")
    with registry_client(registry) as client:
        if not name:
            if off or priority is not None or memory_mb is not None:
                raise click.UsageError("name the model to change")
            placements = client.list_pool_placements()
            if as_json:
                print_json([to_dict(p) for p in placements])
                return
            rows = [[p.model, p.priority, _mib(p.memory_bytes), p.revision] for p in placements]
            table("pooled models", ["model", "priority", "memory", "revision"], rows)
            return
        current = client.get_pool_placement(name)
        if off:
            current = client.set_pool_placement(name, pooled=False)
        elif priority is not None or memory_mb is not None:
            current = client.set_pool_placement(
                name,
                priority=current.priority if priority is None else priority,
                memory_bytes=(
                    current.memory_bytes if memory_mb is None else int(memory_mb * 1024 * 1024)
                ),
            )
    if not current.pooled:
        emit(as_json, current, f"{name}: not pooled (revision {current.revision})")
        return
    memory = _mib(current.memory_bytes)
    text = f"{name}: pooled, priority {current.priority}, memory {memory}"
    emit(as_json, current, f"{text} (revision {current.revision})")


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB" if size else "archive size"
