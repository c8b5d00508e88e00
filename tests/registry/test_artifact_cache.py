"""The inference side's sha256-keyed artifact cache (no network)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from modelport.errors import InvalidInput
from modelport.inference.artifact_cache import Artifact, ArtifactCache


def test_adopt_verifies_and_a_restart_reuses_or_refetches(tmp_path: Path) -> None:
    data = b"archive bytes"
    sha = hashlib.sha256(data).hexdigest()
    cache = ArtifactCache(tmp_path)
    temp = cache.temp_path()
    temp.write_bytes(b"tampered")
    with pytest.raises(InvalidInput, match="expected"):
        cache.adopt(temp, sha)
    assert not temp.exists() and not cache.has(sha)

    temp = cache.temp_path()
    temp.write_bytes(data)
    cache.adopt(temp, sha)
    cache.remember({"m": [Artifact("m", 3, sha)]})

    restarted = ArtifactCache(tmp_path)
    assert restarted.has(sha)
    assert restarted.recall() == {"m": [Artifact("m", 3, sha)]}
    restarted.archive_path(sha).write_bytes(b"bit rot")
    again = ArtifactCache(tmp_path)
    assert not again.has(sha), "a corrupt archive is not reused"
    assert not again.archive_path(sha).exists()


def test_temp_entries_of_dead_processes_are_cleared(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    mine = cache.temp_path()
    mine.write_bytes(b"in progress")
    dead = cache.tmp / "999999999-abc"  # above any pid_max: that process is gone
    dead.write_bytes(b"left by a crash")
    ArtifactCache(tmp_path)
    assert mine.exists() and not dead.exists()
    assert mine.name.startswith(f"{os.getpid()}-")
