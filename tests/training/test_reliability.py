"""Cancel stops the workers and registers nothing; a killed worker resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from modelport.client.registry import RegistryClient
from modelport.client.training import TrainingClient, status_name
from modelport.proto.modelport.training.v1 import training_pb2 as pb

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


def _wait_for(client: TrainingClient, job_id: str, kind: int) -> pb.JobEvent:
    for event in client.events(job_id, follow=True):
        if event.kind == kind and event.progress.step > 0:
            return event
    raise AssertionError(f"the job ended before a {pb.JobEvent.Kind.Name(kind)} event")


def test_cancel_stops_the_workers_and_registers_nothing(
    registry: object, training: ThreadedTraining, tmp_path: Path
) -> None:
    address = registry.address  # type: ignore[attr-defined]
    _setup(address, tmp_path)
    with TrainingClient(training.address) as client:
        job = client.create(
            "reg@production",
            "pairs",
            aliases=["canary"],
            hyperparameters={"epochs": 5000, "batch_size": 8},
        )
        _wait_for(client, job.id, pb.JobEvent.PROGRESS)
        pgid = _handle(training, job.id)
        cancelled = client.cancel(job.id)
        assert status_name(cancelled.status) == "cancelled"
        assert not _alive(pgid), "workers still running after cancel"
        time.sleep(1.0)
        assert status_name(client.get(job.id).status) == "cancelled"
        assert status_name(client.cancel(job.id).status) == "cancelled"  # idempotent
    with RegistryClient(address) as client:
        assert [v.version for v in client.list_versions("reg")] == [1]
        assert "canary" not in client.get_model("reg").aliases


def test_a_killed_worker_resumes_from_its_last_checkpoint(
    registry: object, training: ThreadedTraining, tmp_path: Path
) -> None:
    address = registry.address  # type: ignore[attr-defined]
    _setup(address, tmp_path)
    with TrainingClient(training.address) as client:
        job = client.create(
            "reg@production",
            "pairs",
            hyperparameters={"epochs": 60, "batch_size": 8, "checkpoint_every": 40},
        )
        checkpoint = _wait_for(client, job.id, pb.JobEvent.CHECKPOINT)
        (worker,) = _children(_handle(training, job.id))
        os.kill(worker, signal.SIGKILL)
        job = client.wait(job.id)
        events = list(client.events(job.id))
    assert status_name(job.status) == "succeeded", job.error.message
    assert job.restarts >= 1
    resumed = [e.message for e in events if e.message.startswith("resumed from step")]
    assert resumed and int(resumed[0].split()[-1]) >= checkpoint.progress.step
    steps = [e.progress.step for e in events if e.kind == pb.JobEvent.PROGRESS]
    assert steps[-1] == job.progress.total_steps
