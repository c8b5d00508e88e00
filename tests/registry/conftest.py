"""Fixtures for registry tests: model folders, stores on SQLite and PostgreSQL, servers."""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from model_dirs import scale_model_dir
from modelport.registry.server import RegistryServer, RegistrySettings
from modelport.registry.store import RegistryStore
from postgres import PostgresServer

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


class ThreadedRegistry:
    """A real registry gRPC server on its own event loop thread (for sync clients)."""

    def __init__(self, settings: RegistrySettings) -> None:
        self.server = RegistryServer(settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(60)
        self.address = self.server.address

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(1.0), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def registry_settings(tmp_path: Path, database: str = "") -> RegistrySettings:
    return RegistrySettings(
        database=database or f"sqlite:///{tmp_path / 'registry.db'}",
        blob_dir=tmp_path / "blobs",
        max_upload_mb=8,
        host="127.0.0.1",
        grpc_port=0,
    )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ThreadedRegistry]:
    server = ThreadedRegistry(registry_settings(tmp_path))
    try:
        yield server
    finally:
        server.stop()
