"""Fixtures for registry tests: model folders, stores on SQLite and PostgreSQL, servers."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from modelport.registry.store import RegistryStore

from tests.registry.model_dirs import scale_model_dir
from tests.registry.postgres import PostgresServer
from tests.registry.registry_servers import ThreadedRegistry, registry_settings

MAX_UPLOAD = 8 * 1024 * 1024


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture
def make_model(tmp_path: Path, export_cache: Path) -> Callable[..., Path]:
    """make_model(name, factor) → a Triton folder whose model multiplies by `factor`."""
    counter = itertools.count()

    def make(name: str = "scale", factor: float = 2.0) -> Path:
        return scale_model_dir(tmp_path / f"src{next(counter)}", name, factor, cache=export_cache)

    return make


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer | None]:
    server = PostgresServer()
    reason = server.start()
    if reason:
        print(f"\nPostgreSQL tests skipped: {reason}", file=sys.stderr)
        server.stop()
        yield None
        return
    try:
        yield server
    finally:
        server.stop()


_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    server = request.getfixturevalue("postgres")
    if server is None:
        pytest.skip("PostgreSQL is not available here (reason printed at session start)")
    return server.create_database(f"registry_{next(_databases)}")


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[RegistryStore]:
    opened = RegistryStore.open(database_url, tmp_path / "blobs", max_upload_bytes=MAX_UPLOAD)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ThreadedRegistry]:
    server = ThreadedRegistry(registry_settings(tmp_path))
    try:
        yield server
    finally:
        server.stop()
