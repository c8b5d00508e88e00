"""A derive worker that dies by a signal before it claimed its job is started again, up to
SPAWN_ATTEMPTS starts; when every start dies the job fails with the signal named.
The workers are real processes of the registry's local executor, killed from outside."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from modelport.client.registry import RegistryClient
from modelport.proto.modelport.registry.v1 import derive_pb2 as dpb
from modelport.registry.derive_executor import SPAWN_ATTEMPTS

from tests.registry.registry_servers import ThreadedRegistry, registry_settings


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ThreadedRegistry]:
    server = ThreadedRegistry(registry_settings(tmp_path))
    try:
        yield server
    finally:
        server.stop()


def kill_workers(count: int, deadline: float = 60.0) -> threading.Thread:
    """Kill the next `count` derive workers this process starts with SIGSEGV, each as
    soon as it appears (long before its imports end and it claims the job)."""
    killed: set[int] = set()

    def hunt() -> None:
        end = time.monotonic() + deadline
        while len(killed) < count and time.monotonic() < end:
            for child in psutil.Process().children(recursive=True):
                try:
                    if child.pid not in killed and "derive-worker" in child.cmdline():
                        child.send_signal(signal.SIGSEGV)
                        killed.add(child.pid)
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.005)

    thread = threading.Thread(target=hunt, daemon=True)
    thread.start()
    return thread


def derive(registry: ThreadedRegistry, make_model: Callable[..., Path]) -> dpb.DeriveJob:
    with RegistryClient(registry.address) as client:
        client.push(make_model("scale", 3.0), name="scale")
        return client.derive_and_wait("scale:1", dtype="fp16", timeout=120)


def test_a_worker_killed_before_it_starts_is_started_again(
    registry: ThreadedRegistry, make_model: Callable[..., Path]
) -> None:
    hunter = kill_workers(1)
    job = derive(registry, make_model)
    hunter.join(5)
    assert job.state == dpb.DeriveJob.SUCCEEDED, job.message
    assert job.child_version == 2


def test_a_worker_killed_at_every_start_fails_the_job_naming_the_signal(
    registry: ThreadedRegistry, make_model: Callable[..., Path]
) -> None:
    hunter = kill_workers(SPAWN_ATTEMPTS)
    job = derive(registry, make_model)
    hunter.join(5)
    assert job.state == dpb.DeriveJob.FAILED
    assert f"status -{int(signal.SIGSEGV)}" in job.message
