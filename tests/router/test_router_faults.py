"""Faults: a replica process killed with SIGKILL under load."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.router.router_helpers import simple_request

HERE = Path(__file__).resolve().parent
SERVICES = HERE.parents[1] / "services"


@pytest.fixture
def replica_processes() -> Iterator[list[tuple[subprocess.Popen[str], str]]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SERVICES), str(HERE.parents[1])])}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.toy_oip_server", "simple:1"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    try:
        started = []
        for process in processes:
            assert process.stdout is not None
            started.append((process, process.stdout.readline().strip()))
        yield started
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()


async def test_kill_9_under_load_fails_only_requests_already_on_it(
    replica_processes, endpoints_file, router, stub
) -> None:
    endpoints_file.write([("simple", address) for _, address in replica_processes])
    deadline = time.monotonic() + 10
    while len(router.table.candidates("simple", "1")) < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    victim, victim_address = replica_processes[0]
    request = simple_request()
    failures: list[tuple[float, grpc.StatusCode]] = []
    successes = 0
    stop = asyncio.Event()

    async def worker() -> None:
        nonlocal successes
        while not stop.is_set():
            try:
                await stub.ModelInfer(request, timeout=5)
                successes += 1
            except grpc.aio.AioRpcError as exc:
                failures.append((time.monotonic(), exc.code()))

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    await asyncio.sleep(0.5)
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*workers)
    # Requests already on the victim may fail (they are retried, so most do
    # not); everything sent after it died goes elsewhere and succeeds.
    concurrency = len(workers)
    assert len(failures) <= concurrency  # at most what was in flight at the kill
    assert all(at - killed_at < 0.5 for at, _ in failures), failures
    assert successes > 50
    assert router.router.stats.ejections[("simple", victim_address)] == 1
    picks_after = router.table.replicas[victim_address].picks
    await asyncio.gather(*(stub.ModelInfer(request, timeout=5) for _ in range(30)))
    assert router.table.replicas[victim_address].picks == picks_after  # ejected
