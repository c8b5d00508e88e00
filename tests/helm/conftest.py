"""Fixtures that render the chart with the real Helm binary.

Helm comes from `make tools` (.venv/bin/helm at the repo root) or from $HELM. A missing
binary fails these tests rather than skipping them: a chart that is never rendered in CI
would rot unnoticed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helm.helmchart import (
    Manifest,
    Render,
    helm_path,
    load_manifests,
    run_helm,
    template_args,
)


@pytest.fixture(scope="session")
def helm() -> Path:
    path = helm_path()
    if not os.access(path, os.X_OK):
        pytest.fail(f"helm not found at {path}: run `make tools` (or set HELM=/path/to/helm)")
    return path


@pytest.fixture(scope="session")
def render(helm: Path) -> Render:
    """render(*values_files, sets=(...)) -> the rendered objects (helm test hooks included)."""
    cache: dict[tuple[Any, ...], list[Manifest]] = {}

    def _render(*values_files: Path, sets: tuple[str, ...] = ()) -> list[Manifest]:
        key = (values_files, sets)
        if key not in cache:
            done = run_helm(helm, *template_args(values_files, sets))
            assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
            cache[key] = load_manifests(done.stdout)
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def render_error(helm: Path) -> Callable[..., str]:
    """render_error(*values_files, sets=(...)) -> helm's error text; fails if rendering works."""

    def _render_error(*values_files: Path, sets: tuple[str, ...] = ()) -> str:
        done = run_helm(helm, *template_args(values_files, sets))
        assert done.returncode != 0, f"helm template unexpectedly succeeded with {sets}"
        return done.stderr

    return _render_error
