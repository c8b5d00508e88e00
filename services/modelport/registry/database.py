"""Opening the metadata database and bringing its schema up to date (Alembic).

SQLite is the embedded default; PostgreSQL serves clusters. `postgresql://`
URLs are rewritten to the psycopg 3 driver, which is what we ship.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from modelport.errors import InvalidInput

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_migrating = threading.Lock()
MIGRATION_LOCK = 0x6D6F64656C706F72  # "modelpor": an arbitrary, fixed advisory-lock key


def normalize_url(database: str) -> str:
    """A SQLAlchemy URL from what an operator types: a URL, or a path to a SQLite file."""
    if "://" not in database:
        return f"sqlite:///{Path(database).expanduser().resolve()}"
    for prefix in ("postgresql://", "postgres://"):
        if database.startswith(prefix):
            return "postgresql+psycopg://" + database[len(prefix) :]
    try:
        make_url(database)
    except Exception as exc:
        raise InvalidInput(f"--database '{database}': not a database URL ({exc})") from None
    return database


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        # WAL lets readers (Watch polls) run beside the one writer; FULL
        # syncs the log on commit, so a committed row survives a power cut.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def open_engine(database: str) -> Engine:
    url = make_url(normalize_url(database))
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        _tune_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def migrate(engine: Engine) -> None:
    """Apply every pending Alembic migration shipped inside this package."""
    from alembic.config import Config

    config = Config()
    with _migrating:  # Alembic keeps its running context in module globals
        _upgrade(engine, config)
    log.info("registry schema is at the latest migration (%s)", engine.url.get_backend_name())


def _upgrade(engine: Engine, config: Any) -> None:
    from alembic import command

    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Replicas starting together: one migrates, the others wait, then find it done.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
