"""The fine-tuning flows through the front door, on one `modelport up` the module shares.

Against `modelport up` (registry, inference services following `production` and
`canary`, router, training service, the generative sample): `modelport datasets push`, then `modelport
finetune create --alias canary --workers 2 --follow --plot`. While it runs, one of
the two torch.distributed workers is SIGKILLed after a checkpoint; torchrun restarts
the group, which resumes there. The job then registers `mlp:2` as a child of
`mlp:1` with its lineage, and the router serves it to the canary slice of a split.
The job's loss curve, kill and resume included, matches one process trained here on
the same data, seed and hyperparameters: the same global batch gives the same
updates, and a resumed group continues exactly where its checkpoint left off.
Then the generative sample: a LoRA job on `tiny-llama@production` with `--then-derive
int8-weight-only`, whose canary the router streams generations from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from modelport.client.registry import RegistryClient
from modelport.client.training import TrainingClient, status_name
from modelport.proto.inference import grpc_service_pb2_grpc as ipb_grpc
from modelport.proto.modelport.training.v1 import training_pb2 as pb
from modelport.training.worker import WorkerSpec, run

from tests.generative.test_generative_serving import generation_request, text_of
from tests.inference.requests import mlp_request, output
from tests.training.test_decoder import PROMPT
from tests.training.tiny_decoder import DATA

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("torch_threads")]

SERVICES = Path(__file__).resolve().parents[2] / "services"
ENV = {**os.environ, "PYTHONPATH": str(SERVICES)}
EVERY = 20  # checkpoint_every


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelport.cli", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def stack(
    sample_repo: Path, sample_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, str, Path]]:
    """One `modelport up` (with the generative sample) on free ports for the module's
    flows: (router, registry, training, data dir)."""
    data = tmp_path_factory.mktemp("up") / "data"
    shutil.copytree(sample_repo, data / "models")  # already built: no export at start
    shutil.copytree(sample_dir.parent, data / "models" / "tiny-llama")  # trained: no training
    command = [sys.executable, "-m", "modelport.cli", "up", "--data-dir", str(data),
               "--grpc-port", "0", "--registry-port", "0", "--training-port", "0",
               "--metrics-port", "-1", "--http-port", "-1", "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert process.stderr is not None
        found = None
        while not found:
            line = process.stderr.readline()
            assert line, "modelport up exited"
            found = re.search(
                r"router on (\S+:\d+).*registry on (\S+:\d+).*training on (\S+:\d+)", line
            )
        # Keep reading its log so the pipe never fills.
        threading.Thread(target=process.stderr.read, daemon=True).start()
        router, registry, training = found.groups()
        yield router, registry, training.replace("0.0.0.0", "127.0.0.1"), data
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _pairs(path: Path, rows: int = 480) -> tuple[np.ndarray, np.ndarray]:
    """targets = a fixed linear map of the inputs: learnable by the mlp sample."""
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(rows, 256)).astype(np.float32)
    weights = (rng.normal(size=(256, 16)) / 16).astype(np.float32)
    np.savez(path, inputs=inputs, targets=inputs @ weights)
    return inputs, inputs @ weights


def _kill_a_worker_after_a_checkpoint(training: str, data: Path) -> dict[str, int]:
    """Watch the job through the SDK; SIGKILL its rank-1 worker after the first checkpoint."""
    with TrainingClient(training) as client:
        deadline = time.monotonic() + 60
        while not (jobs := [j for j in client.list() if j.model.startswith("mlp@")]):
            assert time.monotonic() < deadline, "no job was created"
            time.sleep(0.2)
        job_id = jobs[0].id
        for event in client.events(job_id, follow=True):
            if event.kind == pb.JobEvent.CHECKPOINT and event.progress.step > 0:
                record = json.loads((data / "training" / "jobs" / job_id / "job.json").read_text())
                torchrun = int(record["handle"])
                workers = sorted(
                    int(pid)
                    for task in Path(f"/proc/{torchrun}/task").iterdir()
                    for pid in (task / "children").read_text().split()
                )
                assert len(workers) == 2, workers
                os.kill(workers[-1], signal.SIGKILL)
                return {"checkpoint": event.progress.step}
    raise AssertionError("the job ended before its first checkpoint")


def _curve(events: list[pb.JobEvent]) -> list[tuple[str, int, float]]:
    return [
        ("progress", e.progress.step, e.metrics["train_loss"])
        if e.kind == pb.JobEvent.PROGRESS
        else ("eval", e.progress.step, e.metrics["validation_loss"])
        for e in events
        if e.kind in (pb.JobEvent.PROGRESS, pb.JobEvent.EVAL)
    ]


def _reference(
    tmp_path: Path, data: Path, dataset: Path, job_id: str
) -> dict[tuple[str, int], float]:
    """One process, run here, on the job's resolved hyperparameters, seed and split."""
    record = json.loads((data / "training" / "jobs" / job_id / "job.json").read_text())
    work = tmp_path / "reference"
    work.mkdir()
    spec = WorkerSpec(
        job_id="reference",
        kind="tensor",
        method="full",
        hyperparameters=record["hyperparameters"],
        seed=int(record["seed"]),
        validation_fraction=float(record["validation_fraction"]),
        work_dir=str(work),
        base_model_dir=str(data / "models" / "mlp"),
        dataset_path=str(dataset),
        threads=1,
    )
    assert run(spec) == 0
    events = [json.loads(line) for line in (work / "worker-events.jsonl").read_text().splitlines()]
    return {
        (e["kind"], e["step"]): e["metrics"].get("train_loss", e["metrics"].get("validation_loss"))
        for e in events
        if e["kind"] in ("progress", "eval")
    }


def test_datasets_push_finetune_follow_canary_through_modelport_up(
    stack: tuple[str, str, str, Path], tmp_path: Path
) -> None:
    router, registry, training, data = stack
    dataset = tmp_path / "pairs.npz"
    inputs, targets = _pairs(dataset)
    pushed = _cli("datasets", "push", str(dataset), "--name", "pairs", "--registry", registry)
    assert pushed.returncode == 0, pushed.stderr

    killed: dict[str, int] = {}
    watcher = threading.Thread(
        target=lambda: killed.update(_kill_a_worker_after_a_checkpoint(training, data)),
        daemon=True,
    )
    watcher.start()
    plot = tmp_path / "loss.png"
    created = _cli(
        "finetune", "create", "--model", "mlp@production", "--dataset", "pairs",
        "--alias", "canary", "--workers", "2", "--suffix", "pairs-v1",
        "--set", "max_steps=60", "--set", "batch_size=16", "--set", "learning_rate=0.002",
        "--set", f"checkpoint_every={EVERY}", "--set", "eval_every=10",
        "--follow", "--plot", str(plot), "--training", training,
    )  # fmt: skip
    watcher.join(10)
    assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]
    assert killed, "no worker was killed"
    # --follow printed the falling validation loss and ended on the new version.
    losses = [float(x) for x in re.findall(r"eval .*?validation_loss=([0-9.]+)", created.stdout)]
    assert len(losses) >= 3 and losses[-1] < 0.7 * losses[0], created.stdout
    assert "succeeded" in created.stdout and "→ mlp:2" in created.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with TrainingClient(training) as client:
        (job,) = [j for j in client.list() if j.model.startswith("mlp@")]
        events = list(client.events(job.id))
    assert status_name(job.status) == "succeeded" and job.result_version == "mlp:2"
    statuses = [status_name(e.status) for e in events if e.kind == pb.JobEvent.STATUS]
    assert statuses == ["validating", "queued", "running", "succeeded"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # The kill: torchrun restarted the group, which resumed at a checkpoint and finished.
    assert job.restarts >= 1
    resumed = [int(e.message.split()[-1]) for e in events if e.message.startswith("resumed from")]
    assert resumed and resumed[0] >= killed["checkpoint"] and resumed[0] % EVERY == 0
    assert job.progress.step == job.progress.total_steps
    assert any(e.kind == pb.JobEvent.PROGRESS and e.progress.eta_seconds > 0 for e in events)

    # Two processes, killed and resumed, follow one process's curve for the same global batch.
    reference = _reference(tmp_path, data, dataset, job.id)
    curve = _curve(events)
    assert len({(k, s) for k, s, _ in curve if k == "eval"}) >= 3
    for kind, step, loss in curve:
        assert (kind, step) in reference or kind == "progress", (kind, step)
        if (kind, step) in reference:
            assert loss == pytest.approx(reference[(kind, step)], rel=1e-3, abs=1e-5), (kind, step)

    with RegistryClient(registry) as client:
        version = client.get_version("mlp@canary")
        policy = _cli("models", "policy", "mlp", "--split", "production=50,canary=50",
                      "--registry", registry)  # fmt: skip
        assert policy.returncode == 0, policy.stderr
    assert version.version == 2 and version.parent == "mlp:1"
    assert version.lineage.method == "fine-tune"
    lineage = dict(version.lineage.parameters)
    assert lineage["training_job"] == job.id and lineage["method"] == "full"
    assert lineage["dataset_sha256"] == job.dataset_sha256
    assert json.loads(lineage["hyperparameters"])["checkpoint_every"] == EVERY
    assert version.labels["modelport.io/suffix"] == "pairs-v1"
    assert version.metrics["validation_loss"] == pytest.approx(job.metrics["validation_loss"])

    # The router sends the canary slice of the split to the fine-tuned version.
    x, target = inputs[:4], targets[:4]
    with grpc.insecure_channel(router) as channel:
        stub = ipb_grpc.GRPCInferenceServiceStub(channel)
        served: dict[str, np.ndarray] = {}
        deadline = time.monotonic() + 60
        session = 0
        while len(served) < 2:
            assert time.monotonic() < deadline, f"versions served: {sorted(served)}"
            session += 1
            try:
                answer = stub.ModelInfer(
                    mlp_request(x), timeout=10, metadata=(("x-modelport-session", f"s{session}"),)
                )
            except grpc.RpcError as error:  # the canary still loading on its replica
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                time.sleep(0.2)
                continue
            served[answer.model_version] = output(answer, "OUTPUT", np.float32)
    assert sorted(served) == ["1", "2"]
    # The tuned version answers much closer to the map it was trained on.
    assert np.abs(served["2"] - target).mean() < 0.5 * np.abs(served["1"] - target).mean()


def _generations_by_version(router: str, prompt: str) -> dict[str, str]:
    """Greedy completions of `prompt` streamed through the router (ModelStreamInfer), one
    session each, until both versions of the split have answered: {version: text}."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + 90
    session = 0
    with grpc.insecure_channel(router) as channel:
        stub = ipb_grpc.GRPCInferenceServiceStub(channel)
        while len(seen) < 2:
            assert time.monotonic() < deadline, f"versions that generated: {sorted(seen)}"
            session += 1
            request = generation_request(prompt, stream=True, model="tiny-llama",
                                         request_id=f"g-{session}", max_tokens=12,
                                         temperature=0)  # fmt: skip
            metadata = (("x-modelport-session", f"gen-{session}"),)
            try:
                answers = list(
                    stub.ModelStreamInfer(iter([request]), timeout=30, metadata=metadata)
                )
            except grpc.RpcError as error:  # the canary still loading on its replica
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                time.sleep(0.2)
                continue
            responses = [a.infer_response for a in answers]
            if any(a.error_message for a in answers):
                time.sleep(0.2)  # an in-band UNAVAILABLE while the canary loads
                continue
            assert responses[-1].parameters["triton_final_response"].bool_param
            seen.setdefault(responses[0].model_version, "".join(text_of(r) for r in responses))
    return seen


def test_lora_of_the_generative_sample_then_derive_then_canary_generation(
    stack: tuple[str, str, str, Path],
) -> None:
    """The issue's done-when on the generative sample: a LoRA job on `tiny-llama@production`
    registers `tiny-llama:2` as the canary, chains an int8 weight-only derive of it in the
    registry (`tiny-llama:3`), and the router's split streams generations from the canary."""
    router, registry, training, _ = stack
    pushed = _cli("datasets", "push", str(DATA / "support.jsonl"), "--name", "support",
                  "--validation-fraction", "0.25", "--registry", registry)  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    created = _cli(
        "finetune", "create", "--model", "tiny-llama@production", "--dataset", "support",
        "--method", "lora", "--alias", "canary", "--then-derive", "int8-weight-only",
        "--set", "max_steps=12", "--set", "batch_size=3", "--set", "learning_rate=0.01",
        "--set", "eval_every=4", "--set", "checkpoint_every=12",
        "--follow", "--training", training,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]
    losses = [float(x) for x in re.findall(r"eval .*?validation_loss=([0-9.]+)", created.stdout)]
    assert len(losses) == 4 and losses[-1] < losses[0], created.stdout  # steps 0, 4, 8, 12
    assert "→ tiny-llama:2" in created.stdout, created.stdout
    assert "→ tiny-llama:3 (int8-weight-only)" in created.stdout, created.stdout

    with TrainingClient(training) as client:
        (job,) = [j for j in client.list() if j.model == "tiny-llama@production"]
        messages = [e.message for e in client.events(job.id)]
    assert status_name(job.status) == "succeeded" and job.method == pb.METHOD_LORA
    assert (job.result_version, job.derived_version) == ("tiny-llama:2", "tiny-llama:3")
    assert any(m.startswith(f"derive job {job.derive_job} started") for m in messages), messages
    assert any(m.startswith("derived tiny-llama:3 from tiny-llama:2") for m in messages)

    with RegistryClient(registry) as client:
        canary, derived = (
            client.get_version("tiny-llama@canary"),
            client.get_version("tiny-llama:3"),
        )
        assert client.get_derive_job(job.derive_job).parent == "tiny-llama:2"
    assert canary.version == 2 and canary.parent == "tiny-llama:1"
    assert canary.lineage.method == "fine-tune" and canary.lineage.parameters["method"] == "lora"
    assert derived.parent == "tiny-llama:2" and derived.lineage.method == "int8-weight-only"
    assert derived.labels["modelport.io/training-job"] == job.id and not derived.aliases

    # The split sends a slice of real generation traffic to the fine-tuned canary.
    policy = _cli("models", "policy", "tiny-llama", "--split", "production=50,canary=50",
                  "--registry", registry)  # fmt: skip
    assert policy.returncode == 0, policy.stderr
    texts = _generations_by_version(router, PROMPT)
    assert sorted(texts) == ["1", "2"]
    assert texts["2"] != texts["1"], texts  # the adapters, merged, changed what it says
