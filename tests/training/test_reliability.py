"""Cancel stops the workers and registers nothing.

(A SIGKILLed worker resuming from its checkpoint is checked on the job of test_up_flow.py.)"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from modelport.client.registry import RegistryClient
from modelport.client.training import TrainingClient, status_name

from tests.training.conftest import ThreadedTraining
from tests.training.test_service import _setup

pytestmark = pytest.mark.timeout(240)


def _handle(training: ThreadedTraining, job_id: str) -> int:
    job_dir = training.server.settings.data_dir / "jobs" / job_id
    return int(json.loads((job_dir / "job.json").read_text())["handle"])


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancel_stops_the_workers_and_registers_nothing(
    registry: object, training: ThreadedTraining, tmp_path: Path
) -> None:
    """Cancelled as soon as torchrun has started its worker (no need to wait for the
    worker's imports: the process group goes either way)."""
    address = registry.address  # type: ignore[attr-defined]
    _setup(address, tmp_path)
    with TrainingClient(training.address) as client:
        job = client.create(
            "reg@production",
            "pairs",
            aliases=["canary"],
            hyperparameters={"epochs": 5000, "batch_size": 8},
        )
        deadline = time.monotonic() + 60
        while status_name(client.get(job.id).status) != "running":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)
        pgid = _handle(training, job.id)
        while not _children(pgid):
            assert time.monotonic() < deadline, "torchrun never started a worker"
            time.sleep(0.1)
        cancelled = client.cancel(job.id)
        assert status_name(cancelled.status) == "cancelled"
        assert not _alive(pgid), "workers still running after cancel"
        time.sleep(1.0)
        assert status_name(client.get(job.id).status) == "cancelled"
        assert status_name(client.cancel(job.id).status) == "cancelled"  # idempotent
        events = list(client.events(job.id))
    assert events[-1].message.startswith("cancelled")
    with RegistryClient(address) as client:
        assert [v.version for v in client.list_versions("reg")] == [1]
        assert "canary" not in client.get_model("reg").aliases
