"""The registry's Prometheus metrics move with uploads, downloads and watchers."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from modelport.client.channel import ModelportClientError
from modelport.client.registry import RegistryClient
from modelport.common.metrics import provider
from prometheus_client import REGISTRY, generate_latest

from tests.registry.registry_servers import ThreadedRegistry


def metric(name: str, **labels: str) -> float:
    text = generate_latest(REGISTRY).decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            total += float(re.split(r"\s+", line)[-1])
    return total


def test_upload_download_and_watch_metrics(
    registry: ThreadedRegistry, make_model: Callable[..., Path], tmp_path: Path
) -> None:
    provider()
    stored = metric("modelport_registry_uploads_total", outcome="stored")
    invalid = metric("modelport_registry_uploads_total", outcome="invalid")
    downloads = metric("modelport_registry_downloads_total")
    watchers = metric("modelport_registry_watch_subscribers")
    with RegistryClient(registry.address) as client:
        client.push(make_model("m", 2.0), name="m")
        bad = tmp_path / "bad.tar"
        bad.write_bytes(b"not a tar" * 10)
        with pytest.raises(ModelportClientError, match="INVALID_ARGUMENT"):
            client.push_archive(bad, name="m")
        client.download("m", tmp_path / "m.tar")
        stream = client.watch()
        next(stream)
        assert metric("modelport_registry_watch_subscribers") == watchers + 1
        stream.close()
    assert metric("modelport_registry_uploads_total", outcome="stored") == stored + 1
    assert metric("modelport_registry_uploads_total", outcome="invalid") == invalid + 1
    assert metric("modelport_registry_downloads_total") == downloads + 1
