"""The training service with a real registry: bad requests fail before any compute.

(A job that trains, resumes and registers is followed end to end in test_up_flow.py.)"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from modelport.client.channel import ModelportClientError
from modelport.client.datasets import DatasetClient
from modelport.client.registry import RegistryClient
from modelport.client.training import TrainingClient, status_name

from tests.training.conftest import ThreadedTraining, regression_npz, tensor_model_dir

pytestmark = pytest.mark.timeout(240)


def _setup(registry_address: str, tmp_path: Path, rows: int = 96) -> str:
    with RegistryClient(registry_address) as client:
        client.push(tensor_model_dir(tmp_path / "reg"), name="reg", aliases=["production"])
    with DatasetClient(registry_address) as datasets:
        return datasets.push(regression_npz(tmp_path / "data.npz", rows), name="pairs").sha256


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
        assert derive.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "int8-weight-only" in derive.value.message  # what it takes instead
        lora = client.wait(client.create("reg@production", "pairs", method="lora").id)
        assert lora.error.code == "INVALID_ARGUMENT" and "lora" in lora.error.message
    job_dir = training.server.settings.data_dir / "jobs" / job.id
    assert not (job_dir / "spec.json").exists()  # no worker was ever started
    with RegistryClient(address) as client:
        assert [v.version for v in client.list_versions("reg")] == [1]
