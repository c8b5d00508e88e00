"""The training service end to end with a real registry: jobs, events, registration, failures."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from modelport.client.channel import ModelportClientError
from modelport.client.datasets import DatasetClient
from modelport.client.registry import RegistryClient
from modelport.client.training import TrainingClient, status_name
from modelport.proto.modelport.training.v1 import training_pb2 as pb
from modelport.training.registration import DATASET_LABEL, JOB_LABEL, METHOD_LABEL

from tests.training.conftest import ThreadedTraining, regression_npz, tensor_model_dir

pytestmark = pytest.mark.timeout(240)


def _setup(registry_address: str, tmp_path: Path, rows: int = 96) -> str:
    with RegistryClient(registry_address) as client:
        client.push(tensor_model_dir(tmp_path / "reg"), name="reg", aliases=["production"])
    with DatasetClient(registry_address) as datasets:
        return datasets.push(regression_npz(tmp_path / "data.npz", rows), name="pairs").sha256


def test_job_trains_registers_a_child_version_with_lineage(
    registry: object, training: ThreadedTraining, tmp_path: Path
) -> None:
    address = registry.address  # type: ignore[attr-defined]
    sha = _setup(address, tmp_path)
    with TrainingClient(training.address) as client:
        job = client.create(
            "reg@production",
            "pairs",
            aliases=["canary"],
            suffix="pairs-v1",
            hyperparameters={"epochs": 5, "batch_size": 8, "learning_rate": 0.02},
        )
        assert status_name(job.status) == "validating"
        events = list(client.events(job.id, follow=True))
        job = client.get(job.id)
    assert status_name(job.status) == "succeeded", job.error.message
    statuses = [status_name(e.status) for e in events if e.kind == pb.JobEvent.STATUS]
    assert statuses == ["validating", "queued", "running", "succeeded"]
    evals = [e.metrics["validation_loss"] for e in events if e.kind == pb.JobEvent.EVAL]
    assert evals[-1] < 0.7 * evals[0], evals
    assert any(e.kind == pb.JobEvent.PROGRESS and e.progress.eta_seconds >= 0 for e in events)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert job.method == pb.METHOD_FULL and job.hyperparameters.batch_size > 0
    assert job.checkpoints and job.dataset_counts["validation_examples"] > 0
    with RegistryClient(address) as client:
        version = client.get_version("reg@canary")
        production = client.get_version("reg@production")
    assert job.result_version == f"reg:{version.version}" and version.version == 2
    assert version.parent == f"reg:{production.version}"
    assert version.labels[JOB_LABEL] == job.id and version.labels[DATASET_LABEL] == sha
    assert (
        version.labels[METHOD_LABEL] == "full"
        and version.labels["modelport.io/suffix"] == "pairs-v1"
    )
    assert json.loads(version.labels["modelport.io/hyperparameters"])["epochs"] == 5
    assert version.metrics["validation_loss"] == pytest.approx(job.metrics["validation_loss"])


def test_bad_inputs_fail_before_any_compute(
    registry: object, training: ThreadedTraining, tmp_path: Path
) -> None:
    address = registry.address  # type: ignore[attr-defined]
    _setup(address, tmp_path)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, inputs=np.zeros((10, 5), np.float32), targets=np.zeros((10, 4), np.float32))
    with DatasetClient(address) as datasets:
        datasets.push(wrong, name="wrong-shape")
    with TrainingClient(training.address) as client:
        job = client.wait(client.create("reg@production", "wrong-shape").id)
        assert status_name(job.status) == "failed"
        assert job.error.code == "INVALID_ARGUMENT" and "INPUT" in job.error.message
        missing = client.wait(client.create("reg@production", "no-such-dataset").id)
        assert missing.error.code == "NOT_FOUND" and "no-such-dataset" in missing.error.message
        with pytest.raises(ModelportClientError) as refused:
            client.create("reg@production", "pairs", hyperparameters={"learning_rate": 3.0})
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ModelportClientError) as derive:
            client.create("reg@production", "pairs", then_derive="int8")
        assert derive.value.code == grpc.StatusCode.UNIMPLEMENTED
        lora = client.wait(client.create("reg@production", "pairs", method="lora").id)
        assert lora.error.code == "INVALID_ARGUMENT" and "lora" in lora.error.message
    job_dir = training.server.settings.data_dir / "jobs" / job.id
    assert not (job_dir / "spec.json").exists()  # no worker was ever started
    with RegistryClient(address) as client:
        assert [v.version for v in client.list_versions("reg")] == [1]
