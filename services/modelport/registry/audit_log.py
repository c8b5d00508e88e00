"""Audit events kept in the registry's database, for `modelport audit` and
`modelport models history` (every replica writes and reads the same table)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select

from modelport.auth.audit import AuditEvent, AuditQuery, LogSink
from modelport.registry import tables as t

MAX_LISTED = 1000


class DatabaseAuditLog:
    """An `AuditSink` that inserts each event as a row (and logs it as JSON)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._log = LogSink()

    def record(self, event: AuditEvent) -> None:
        self._log.record(event)
        row = event.to_dict()
        row["at"] = datetime.fromtimestamp(row.pop("time"), UTC)
        with self.engine.begin() as conn:
            conn.execute(t.audit_events.insert().values(**row))

    def query(self, query: AuditQuery) -> list[AuditEvent]:
        """Matching events, newest first, at most `query.limit` (capped)."""
        table = t.audit_events
        statement = select(table).order_by(table.c.seq.desc())
        for column, value in (
            (table.c.model, query.model),
            (table.c.tenant, query.tenant),
            (table.c.action, query.action),
            (table.c.outcome, query.outcome),
        ):
            if value:
                statement = statement.where(column == value)
        if query.since is not None:
            statement = statement.where(table.c.at >= _utc(query.since))
        if query.until is not None:
            statement = statement.where(table.c.at < _utc(query.until))
        statement = statement.limit(max(1, min(query.limit, MAX_LISTED)))
        with self.engine.connect() as conn:
            rows = conn.execute(statement).all()
        return [_event(row._mapping) for row in rows]


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _event(row: object) -> AuditEvent:
    data = dict(row)  # type: ignore[call-overload]
    data.pop("seq", None)
    at = data.pop("at")
    if at.tzinfo is None:  # SQLite hands back naive datetimes
        at = at.replace(tzinfo=UTC)
    data["time"] = at.timestamp()
    return AuditEvent.from_dict(data)
