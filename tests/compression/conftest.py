"""Fixtures for derived-version tests: the tiny model folder, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.compression.tiny_models import write_tiny

# The derive worker and measure() time each model this long (default 2 s).
os.environ.setdefault("MODELPORT_DERIVE_TIMING_SECONDS", "0.1")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("tiny"))
