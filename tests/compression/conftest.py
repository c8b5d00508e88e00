"""Fixtures for derived-version tests: the tiny model folder, built once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compression.tiny_models import write_tiny

# The derive worker and measure() time each model this long (default 2 s).
os.environ.setdefault("MODELPORT_DERIVE_TIMING_SECONDS", "0.1")


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread() -> Iterator[None]:
    """On a shared 2-core machine two intra-op threads per process thrash (a tiny
    decoder's training step: 1.6 s against 0.06 s); these tests check results, not speed."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.compression.tiny_models import write_decoder

    return write_decoder(tmp_path_factory.mktemp("decoder"))
