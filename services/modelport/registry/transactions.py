"""Write transactions that take the revision lock first, record events, and notify.

Every mutation bumps the single-row `revision_counter` and appends to `events`
inside its transaction. The no-op update at the start takes the lock
(PostgreSQL row lock, SQLite write lock) before anything is read, so writers
queue, each event gets the next revision, and events become visible in order.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from modelport.registry import tables as t


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class Tx:
    conn: Connection
    events: list[int]

    def emit(self, kind: str, model: str, **fields: Any) -> int:
        self.conn.execute(
            t.revision_counter.update()
            .where(t.revision_counter.c.id == 1)
            .values(revision=t.revision_counter.c.revision + 1)
        )
        revision = int(
            self.conn.scalar(
                select(t.revision_counter.c.revision).where(t.revision_counter.c.id == 1)
            )
            or 0
        )
        row = {"version": 0, "alias": "", "previous_version": 0, "job": "", **fields}
        self.conn.execute(
            t.events.insert().values(revision=revision, kind=kind, model=model, at=utcnow(), **row)
        )
        self.events.append(revision)
        return revision


class Writer:
    """Opens write transactions on `engine` and tells listeners what committed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._listeners: list[Callable[[int], None]] = []
        self._listeners_lock = threading.Lock()

    def add_listener(self, callback: Callable[[int], None]) -> None:
        """`callback(revision)` runs after each committed change (in the writer's thread)."""
        with self._listeners_lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[int], None]) -> None:
        with self._listeners_lock, contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        tx = Tx(conn=None, events=[])  # type: ignore[arg-type]
        with self.engine.begin() as conn:
            # A no-op write first: takes the lock (PostgreSQL row lock, SQLite
            # write lock) before anything is read, so writers queue here.
            conn.execute(
                t.revision_counter.update()
                .where(t.revision_counter.c.id == 1)
                .values(revision=t.revision_counter.c.revision)
            )
            tx.conn = conn
            yield tx
        if tx.events:
            with self._listeners_lock:
                listeners = list(self._listeners)
            for callback in listeners:
                callback(tx.events[-1])
