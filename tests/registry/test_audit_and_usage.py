"""The registry's audit table and upload ledger on real SQLite and PostgreSQL, and
the migrations producing exactly the schema the code declares."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from modelport.auth.audit import AuditEvent, AuditQuery
from modelport.auth.quotas import UploadMeter
from modelport.errors import QuotaExceeded
from modelport.registry import tables
from modelport.registry.audit_log import DatabaseAuditLog
from modelport.registry.database import migrate, open_engine
from modelport.registry.upload_ledger import DatabaseUploadLedger
from sqlalchemy import Engine


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def test_the_migrations_build_the_declared_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), tables.metadata)
    assert differences == []


def test_audit_events_are_stored_and_queried_newest_first(engine: Engine) -> None:
    log = DatabaseAuditLog(engine)
    base = datetime(2026, 11, 23, 12, tzinfo=UTC).timestamp()
    for i in range(6):
        log.record(
            AuditEvent(
                "registry",
                "alias" if i % 2 else "push",
                "SetAlias",
                "ok",
                tenant="team-a" if i < 4 else "team-b",
                subject="key:abcdef12",
                method="api-key",
                peer="ipv4:10.0.0.7:5000",
                model=f"m{i % 2}",
                version=str(i),
                details={"alias": "production"},
                time=base + i,
            )
        )
    everything = log.query(AuditQuery())
    assert [e.version for e in everything] == ["5", "4", "3", "2", "1", "0"]
    assert everything[0].time == pytest.approx(base + 5)
    assert everything[0].details == {"alias": "production"} and everything[0].peer.startswith(
        "ipv4"
    )
    assert [e.version for e in log.query(AuditQuery(model="m1", tenant="team-a"))] == ["3", "1"]
    assert [e.version for e in log.query(AuditQuery(action="push", since=base + 1))] == ["4", "2"]
    assert [e.version for e in log.query(AuditQuery(until=base + 2, limit=1))] == ["1"]


def test_upload_bytes_are_reserved_atomically_across_writers(engine: Engine) -> None:
    ledger = DatabaseUploadLedger(engine)
    day = "2026-11-23"
    # 20 writers race for 1,000 bytes in 100-byte steps: exactly 10 reservations pass.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: ledger.try_reserve("team-a", day, 100, 1000), range(20)))
    assert sum(results) == 10 and ledger.used("team-a", day) == 1000
    assert not ledger.try_reserve("team-a", day, 1, 1000)
    assert ledger.try_reserve("team-a", "2026-11-24", 1000, 1000)
    assert not ledger.try_reserve("team-b", day, 1001, 1000)
    assert ledger.used("team-b", day) == 0

    clock = datetime(2026, 11, 23, 23, 59, tzinfo=UTC).timestamp
    meter = UploadMeter("team-c", 500, ledger, clock)
    meter.add(400)
    with pytest.raises(QuotaExceeded) as error:
        meter.add(200)
    assert error.value.retry_after_seconds == pytest.approx(60)
