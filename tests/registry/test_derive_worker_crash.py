"""A derive worker that dies by a signal before it claimed its job is started again, up to
SPAWN_ATTEMPTS starts; when every start dies the job fails with the signal named.
The workers are real processes of the registry's local executor, killed from outside.

And the cause those deaths had: workers started through the event loop (uvloop's fork)
ran the registry's fork handlers, where gRPC's EventEngine threads could crash the child
before its exec. A probe process registers a fork handler that aborts and starts a real
worker under uvloop: started by fork it dies by SIGABRT, started by vfork it runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
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


FORK_HANDLER_PROBE = textwrap.dedent("""
    import asyncio, ctypes
    import uvloop
    from modelport.registry.derive_executor import LocalExecutor

    libc = ctypes.CDLL(None)
    # A child-side fork handler (as gRPC registers one): abort in any child of fork().
    assert libc.__register_atfork(None, None, ctypes.cast(libc.abort, ctypes.c_void_p), None) == 0

    async def main():
        executor = LocalExecutor(jobs=None, address=lambda: "127.0.0.1:9")
        returncode, tail = await executor._start_worker("no-such-job", "token")
        print(returncode)
        print(tail)

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(main())
""")


def test_workers_start_without_running_the_registrys_fork_handlers() -> None:
    services = str(Path(__file__).resolve().parents[2] / "services")
    env = {**os.environ, "PYTHONPATH": services}
    probe = subprocess.run(
        [sys.executable, "-c", FORK_HANDLER_PROBE],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    returncode, _, tail = probe.stdout.partition("\n")
    # The worker ran (and failed to reach the registry): it was not killed by a signal.
    assert returncode == "1", probe.stdout
    assert "UNAVAILABLE" in tail, probe.stdout
