"""Reads shared by the store's operations: rows by name and rows → records."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, func, select

from modelport.artifacts import archive_checks
from modelport.artifacts.refs import DEFAULT_ALIAS, Ref
from modelport.errors import NotFound
from modelport.registry import tables as t
from modelport.registry.records import Event, Lineage, ModelInfo, VersionInfo
from modelport.registry.transactions import as_utc


def model_row(conn: Connection, name: str) -> Row[Any]:
    row = conn.execute(select(t.models).where(t.models.c.name == name)).first()
    if row is None:
        raise NotFound(f"model '{name}' is not in the registry")
    return row


def model_info(conn: Connection, row: Row[Any]) -> ModelInfo:
    aliases = conn.execute(
        select(t.aliases.c.alias, t.aliases.c.version).where(t.aliases.c.model_id == row.id)
    ).all()
    count = conn.scalar(select(func.count()).where(t.versions.c.model_id == row.id))
    return ModelInfo(
        name=row.name,
        description=row.description,
        labels=dict(row.labels),
        created_at=as_utc(row.created_at),
        aliases={a: int(v) for a, v in aliases},
        latest_version=int(row.latest_version),
        version_count=int(count or 0),
    )


def version_info(conn: Connection, model_name: str, row: Row[Any]) -> VersionInfo:
    aliases = conn.scalars(
        select(t.aliases.c.alias).where(
            t.aliases.c.model_id == row.model_id, t.aliases.c.version == row.version
        )
    ).all()
    return VersionInfo(
        model=model_name,
        version=int(row.version),
        sha256=row.sha256,
        size_bytes=int(row.size_bytes),
        created_at=as_utc(row.created_at),
        labels=dict(row.labels),
        metrics=dict(row.metrics),
        parent=row.parent,
        signature=archive_checks.Signature.from_json(row.signature),
        model_file=row.model_file,
        aliases=tuple(sorted(aliases)),
        lineage=Lineage.from_json(row.lineage),
        status=row.status or "",
    )


def version_row(conn: Connection, model: Row[Any], version: int) -> Row[Any]:
    row = conn.execute(
        select(t.versions).where(t.versions.c.model_id == model.id, t.versions.c.version == version)
    ).first()
    if row is None:
        raise NotFound(f"model '{model.name}' has no version {version}")
    return row


def resolve_row(conn: Connection, ref: Ref) -> tuple[Row[Any], str]:
    model = model_row(conn, ref.model)
    if ref.version:
        return version_row(conn, model, ref.version), ""
    alias = ref.alias or DEFAULT_ALIAS
    target = conn.scalar(
        select(t.aliases.c.version).where(
            t.aliases.c.model_id == model.id, t.aliases.c.alias == alias
        )
    )
    if target is not None:
        return version_row(conn, model, int(target)), alias
    if ref.alias:
        raise NotFound(f"model '{ref.model}' has no alias '{ref.alias}'")
    latest = conn.scalar(
        select(func.max(t.versions.c.version)).where(t.versions.c.model_id == model.id)
    )
    if latest is None:
        raise NotFound(f"model '{ref.model}' has no versions")
    return version_row(conn, model, int(latest)), ""


def events_after(
    conn: Connection, revision: int, models: frozenset[str], limit: int
) -> list[Event]:
    query = select(t.events).where(t.events.c.revision > revision)
    if models:
        query = query.where(t.events.c.model.in_(models))
    rows = conn.execute(query.order_by(t.events.c.revision).limit(limit)).all()
    return [
        Event(
            revision=int(r.revision),
            kind=r.kind,
            model=r.model,
            version=int(r.version),
            alias=r.alias,
            previous_version=int(r.previous_version),
            at=as_utc(r.at),
            job=r.job or "",
            detail=dict(r.detail or {}),
        )
        for r in rows
    ]
