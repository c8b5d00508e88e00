"""The registry core against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from modelport.artifacts.archive import pack_directory
from modelport.errors import AlreadyExists, FailedPrecondition, InvalidInput, NotFound
from modelport.registry.database import normalize_url
from modelport.registry.records import EventKind, NewVersion, Policy, PoolPlacement
from modelport.registry.store import RegistryStore

from tests.registry.postgres import PostgresServer


def push(store: RegistryStore, model_dir: Path, name: str, *aliases: str, parent: str = "") -> int:
    archive = model_dir.parent / f"{model_dir.name}.tar"
    pack_directory(model_dir, archive)
    new = NewVersion(name, aliases=aliases, create_model=True, parent=parent)
    sink = store.begin_upload(new)
    sink.write(archive.read_bytes())
    return store.finish_upload(sink, new, "").version


def test_versions_aliases_and_resolution(
    store: RegistryStore, make_model: Callable[..., Path]
) -> None:
    v1 = push(store, make_model("scale", 2.0), "scale", "production")
    v2 = push(store, make_model("scale", 3.0), "scale", "canary", parent="scale@production")
    assert (v1, v2) == (1, 2)

    assert store.resolve("scale").version == 1
    assert store.resolve("scale").alias == "production"
    assert store.resolve("scale@canary").version == 2
    resolved = store.resolve("scale:2")
    assert (resolved.version, resolved.alias) == (2, "")
    assert store.get_version("scale:2").parent == "scale:1"

    info = store.get_version("scale:1")
    assert info.model_file == "model.pt2"
    assert [t.name for t in info.signature.inputs] == ["INPUT0"]
    assert info.signature.inputs[0].datatype == "FP32"
    assert info.signature.max_batch_size == 8
    assert info.aliases == ("production",)
    assert store.blobs.exists(info.sha256)
    assert store.get_model("scale").aliases == {"production": 1, "canary": 2}

    with pytest.raises(NotFound, match="no alias 'staging'"):
        store.resolve("scale@staging")
    with pytest.raises(NotFound, match="no version 9"):
        store.resolve("scale:9")
    with pytest.raises(NotFound, match="'nope'"):
        store.resolve("nope")


def test_without_production_the_latest_version_is_resolved(
    store: RegistryStore, make_model: Callable[..., Path]
) -> None:
    push(store, make_model("m", 2.0), "m")
    push(store, make_model("m", 3.0), "m")
    assert store.resolve("m").version == 2
    assert store.resolve("m").alias == ""


def test_aliased_version_cannot_be_deleted_and_numbers_are_never_reused(
    store: RegistryStore, make_model: Callable[..., Path]
) -> None:
    push(store, make_model("m", 2.0), "m", "production")
    push(store, make_model("m", 3.0), "m")
    with pytest.raises(FailedPrecondition, match="aliased as production"):
        store.delete_version("m", 1)
    sha2 = store.get_version("m:2").sha256
    store.delete_version("m", 2)
    assert not store.blobs.exists(sha2)
    assert push(store, make_model("m", 4.0), "m") == 3
    with pytest.raises(FailedPrecondition, match="still has aliases"):
        store.delete_model("m")
    store.delete_model("m", force=True)
    with pytest.raises(NotFound):
        store.get_model("m")
    assert list(store.blobs.stored()) == []


def test_identical_content_shares_one_blob(
    store: RegistryStore, make_model: Callable[..., Path]
) -> None:
    model_dir = make_model("m", 2.0)
    push(store, model_dir, "m")
    push(store, model_dir, "m")
    first, second = store.list_versions("m")
    assert first.sha256 == second.sha256
    store.delete_version("m", 1)
    assert store.blobs.exists(second.sha256), "blob still used by version 2"


def test_alias_history_and_rollback(store: RegistryStore, make_model: Callable[..., Path]) -> None:
    for factor in (2.0, 3.0, 4.0):
        push(store, make_model("m", factor), "m")
    store.set_alias("m", "production", 1)
    store.set_alias("m", "production", 3)
    moved = store.rollback_alias("m", "production")
    assert (moved.version, moved.previous_version) == (1, 3)
    assert [m.version for m in store.alias_history("m", "production")] == [1, 3, 1]
    assert store.rollback_alias("m", "production").version == 3
    store.set_alias("m", "canary", 2)
    with pytest.raises(FailedPrecondition, match="no earlier version"):
        store.rollback_alias("m", "canary")
    with pytest.raises(NotFound):
        store.set_alias("m", "production", 42)
    with pytest.raises(InvalidInput, match="alias '7'"):
        store.set_alias("m", "7", 1)
    store.delete_alias("m", "canary")
    assert "canary" not in store.get_model("m").aliases


def test_traffic_policy_round_trip_and_checks(
    store: RegistryStore, make_model: Callable[..., Path]
) -> None:
    push(store, make_model("m", 2.0), "m", "production")
    assert store.get_policy("m").is_empty()
    stored = store.set_policy(
        "m", Policy(split=(("production", 90), ("canary", 10)), shadow_alias="shadow")
    )
    assert stored.revision > 0
    again = store.get_policy("m")
    assert again.split == (("production", 90), ("canary", 10))
    assert (again.shadow_alias, again.revision) == ("shadow", stored.revision)
    store.set_policy("m", Policy(ensemble=("m@production", "other:2")))
    assert store.get_policy("m").ensemble == ("m@production", "other:2")
    with pytest.raises(InvalidInput, match="twice"):
        store.set_policy("m", Policy(split=(("a", 1), ("a", 2))))
    with pytest.raises(InvalidInput, match="positive"):
        store.set_policy("m", Policy(split=(("a", 0),)))
    store.set_policy("m", Policy())
    assert store.get_policy("m").is_empty()
    kinds = [e.kind for e in store.events_after(0) if e.kind == EventKind.POLICY_CHANGED]
    assert len(kinds) == 3


def test_pool_placements_round_trip_checks_and_leave_with_the_model(
    store: RegistryStore, make_model: Callable[..., Path]
) -> None:
    push(store, make_model("m", 2.0), "m", "production")
    store.create_model("other")
    assert store.placements.get("m") == PoolPlacement()
    stored = store.placements.set("m", PoolPlacement(True, priority=5, memory_bytes=1 << 20))
    assert store.placements.get("m") == stored
    assert (stored.pooled, stored.priority, stored.memory_bytes) == (True, 5, 1 << 20)
    store.placements.set("other", PoolPlacement(True))
    assert list(store.placements.list()) == ["m", "other"]
    with pytest.raises(InvalidInput, match="memory_bytes"):
        store.placements.set("m", PoolPlacement(True, memory_bytes=-1))
    with pytest.raises(InvalidInput, match="pooled: true"):
        store.placements.set("m", PoolPlacement(False, priority=3))
    with pytest.raises(NotFound):
        store.placements.set("nope", PoolPlacement(True))
    store.placements.set("other", PoolPlacement(False))
    assert list(store.placements.list()) == ["m"]
    kinds = [e.model for e in store.events_after(0) if e.kind == EventKind.POOL_CHANGED]
    assert kinds == ["m", "other", "other"]
    store.delete_model("m", force=True)
    assert store.placements.list() == {}


def test_duplicate_model_is_rejected(store: RegistryStore) -> None:
    store.create_model("m", "first")
    with pytest.raises(AlreadyExists, match="'m' exists"):
        store.create_model("m")
    with pytest.raises(InvalidInput, match="model name"):
        store.create_model("../etc")


def test_events_are_gap_free_under_concurrent_writers(store: RegistryStore) -> None:
    for i in range(4):
        store.create_model(f"m{i}")
    start = store.current_revision()

    def write(i: int) -> None:
        store.set_policy(f"m{i % 4}", Policy(split=(("production", i + 1),)))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(24)))
    revisions = [e.revision for e in store.events_after(start)]
    assert revisions == list(range(start + 1, start + 25))
    assert store.events_after(start, frozenset({"m1"}))[0].model == "m1"


def test_reopening_migrates_once_and_keeps_data(
    database_url: str, tmp_path: Path, make_model: Callable[..., Path]
) -> None:
    first = RegistryStore.open(database_url, tmp_path / "b", max_upload_bytes=1 << 23)
    push(first, make_model("m", 2.0), "m", "production")
    first.close()
    second = RegistryStore.open(database_url, tmp_path / "b", max_upload_bytes=1 << 23)
    try:
        assert second.resolve("m@production").version == 1
        assert second.current_revision() == 3
    finally:
        second.close()


def test_database_urls_from_operators() -> None:
    assert normalize_url("postgresql://u@db/registry") == "postgresql+psycopg://u@db/registry"
    assert normalize_url("postgres://u@db/r") == "postgresql+psycopg://u@db/r"
    assert normalize_url("postgresql+psycopg://u@db/r") == "postgresql+psycopg://u@db/r"
    assert normalize_url("/data/registry.db") == "sqlite:////data/registry.db"
    assert normalize_url("sqlite:///rel/registry.db") == "sqlite:///rel/registry.db"


def test_replicas_migrating_together_do_not_collide(
    postgres: PostgresServer | None, tmp_path: Path
) -> None:
    """Three registry processes start at once on one new PostgreSQL database."""
    if postgres is None:
        pytest.skip("PostgreSQL is not available here (reason printed at session start)")
    url = postgres.create_database("registry_together")
    go = tmp_path / "go"
    # Each process imports everything first, then all open the store at the same moment.
    code = (
        "import sys, os, time, alembic.command; from modelport.registry.store import RegistryStore\n"
        "while not os.path.exists(sys.argv[3]): time.sleep(0.001)\n"
        "s = RegistryStore.open(sys.argv[1], sys.argv[2], max_upload_bytes=1 << 20)\n"
        "print(s.current_revision())"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "services")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, str(tmp_path / f"b{i}"), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    time.sleep(3)  # let them all reach the start line
    go.touch()
    results = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], [err[-500:] for _, err in results]
    assert [out.strip() for out, _ in results] == ["0", "0", "0"]
