"""Data-parallel training (torchrun, gloo) follows the same loss curve as one process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from modelport.artifacts import datasets as ds
from modelport.training.executors import LocalExecutor
from modelport.training.jobs import Hyperparameters, JobRecord, Method, ModelKind
from modelport.training.worker import WorkerSpec

from tests.training.conftest import regression_npz, tensor_model_dir

pytestmark = pytest.mark.timeout(240)


def _run(tmp_path: Path, workers: int, base: Path, data: Path) -> list[tuple[str, int, float]]:
    summary = ds.summarize(data, 0.1)
    params = Hyperparameters(epochs=2, batch_size=8, learning_rate=0.02).resolve(
        ModelKind.TENSOR, Method.FULL, summary.train_examples, workers
    )
    work = tmp_path / f"w{workers}"
    work.mkdir()
    spec = WorkerSpec(
        job_id="ddp",
        kind="tensor",
        method="full",
        hyperparameters=params.to_json(),
        seed=7,
        validation_fraction=0.1,
        work_dir=str(work),
        base_model_dir=str(base),
        dataset_path=str(data),
    )
    spec.write(work / "spec.json")
    job = JobRecord.new(model="reg", dataset="d", workers=workers)
    executor = LocalExecutor(max_restarts=0)
    handle = executor.start(job, work / "spec.json", work)
    deadline = time.monotonic() + 180
    while (outcome := executor.poll(job, handle)) is None:
        assert time.monotonic() < deadline, "workers did not finish"
        time.sleep(0.2)
    assert outcome.exit_code == 0, (work / "worker.log").read_text()[-2000:]
    assert (work / "output" / "1" / "model.pt2").is_file()
    events = [json.loads(line) for line in (work / "worker-events.jsonl").read_text().splitlines()]
    return [
        (e["kind"], e["step"], e["metrics"].get("train_loss", e["metrics"].get("validation_loss")))
        for e in events
        if e["kind"] in ("progress", "eval")
    ]


def test_two_processes_match_one_for_the_same_global_batch(tmp_path: Path) -> None:
    base = tensor_model_dir(tmp_path / "reg")
    data = regression_npz(tmp_path / "data.npz")
    one = _run(tmp_path, 1, base, data)
    two = _run(tmp_path, 2, base, data)
    # Progress events are throttled by time, so compare the steps both reported.
    curve_one = {(kind, step): loss for kind, step, loss in one}
    curve_two = {(kind, step): loss for kind, step, loss in two}
    shared = sorted(set(curve_one) & set(curve_two))
    assert len([k for k in shared if k[0] == "eval"]) >= 3 and len(shared) >= 5
    for key in shared:
        assert curve_two[key] == pytest.approx(curve_one[key], rel=1e-3, abs=1e-4), key
    evals = [curve_one[k] for k in shared if k[0] == "eval"]
    assert evals[-1] < evals[0]
