"""The training service in the chart, and the Kubernetes executor's objects, against real schemas."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click
import kubernetes_validate
import pytest
from modelport.cli.options import SettingsCommand
from modelport.cli.serve import serve
from modelport.errors import InvalidInput
from modelport.training.jobs import JobRecord
from modelport.training.kubernetes import (
    KubernetesSettings,
    job_outcome,
    render_job,
    render_trainjob,
)
from modelport.training.server import build_executor
from modelport.training.settings import TrainingSettings
from modelport.training.worker import WorkerSpec

from tests.helm.helmchart import CHART, Render

KUBERNETES_VERSION = kubernetes_validate.utils.latest_version()
TRAINING_VALUES = CHART / "ci" / "training-values.yaml"


def _by_kind(objects: list[dict], kind: str, component: str = "training") -> dict:
    (found,) = [
        o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(component)
    ]
    return found


TOLERATIONS = [
    {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
     "tolerationSeconds": 300},
]  # fmt: skip


def test_training_args_are_read_by_the_real_cli_and_rbac_covers_the_executor(
    render: Render,
) -> None:
    objects = render(TRAINING_VALUES)
    deployment = _by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[:2] == ["serve", "training"]
    command = serve.get_command(click.Context(serve), "training")
    assert isinstance(command, SettingsCommand)
    settings = command.settings(command.make_context("training", args[2:]).params)
    assert isinstance(settings, TrainingSettings)
    assert settings.executor == "kubernetes"
    assert settings.registry == "mp-modelport-registry:8003"
    assert settings.node_selector == {"nvidia.com/gpu.present": "true"}
    assert settings.service_address.endswith("-training:8004")
    executor = build_executor(settings)  # what the pod runs with
    assert executor.name == "kubernetes"
    assert executor.settings.node_selector == {"nvidia.com/gpu.present": "true"}  # type: ignore[attr-defined]
    # The values' tolerations reach every worker pod the executor renders, GPU or not.
    assert executor.settings.tolerations == TOLERATIONS  # type: ignore[attr-defined]
    spec = WorkerSpec(job_id="j", kind="tensor", method="full", hyperparameters={}, seed=1,
                      validation_fraction=0.1, work_dir="/work")  # fmt: skip
    for gpus in (0, 1):
        job = JobRecord.new(model="mlp@production", dataset="pairs", gpus_per_worker=gpus)
        manifest = render_job(job, spec, executor.settings)  # type: ignore[attr-defined]
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        placed = manifest["spec"]["template"]["spec"]
        gpu_taint = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert placed["tolerations"] == TOLERATIONS + (gpu_taint if gpus else [])
        assert ("nodeSelector" in placed) == bool(gpus)
        (override,) = render_trainjob(job, spec, executor.settings)["spec"]["podTemplateOverrides"]  # type: ignore[attr-defined]
        assert override["spec"]["tolerations"] == placed["tolerations"]
    role = _by_kind(objects, "Role")
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"]
             for r in rule["resources"]}  # fmt: skip
    assert {"create", "get", "delete"} <= rules[("batch", "jobs")]
    assert {"create", "get", "delete"} <= rules[("trainer.kubeflow.org", "trainjobs")]
    binding = _by_kind(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    assert pod.get("automountServiceAccountToken", True)  # it talks to the API server
    assert not [o for o in render() if "training" in o["metadata"]["name"]]  # off by default


def test_rendered_worker_job_validates_and_carries_gpus_and_node_selector() -> None:
    job = JobRecord.new(model="tiny-lm@production", dataset="support", workers=2, gpus_per_worker=1)
    spec = WorkerSpec(job_id=job.id, kind="decoder", method="lora", hyperparameters={"epochs": 1},
                      seed=1, validation_fraction=0.1, work_dir="/work", registry="reg:8003",
                      base_ref="tiny-lm:1", dataset_ref="support:ab12cd34",
                      report_address="training:8004", attempt="a1")  # fmt: skip
    settings = KubernetesSettings(namespace="serving", image="modelport:0.1.0",
                                  node_selector={"nvidia.com/gpu.present": "true"})  # fmt: skip
    manifest = render_job(job, spec, settings)
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert "--nproc-per-node=2" in container["command"][-1]
    env = {e["name"]: e["value"] for e in container["env"]}
    carried = json.loads(env["MODELPORT_WORKER_SPEC"])
    assert carried["registry"] == "reg:8003" and carried["report_address"] == "training:8004"
    assert manifest["spec"]["backoffLimit"] == 0  # torchrun restarts, not the Job
    trainjob = render_trainjob(job, spec, settings)
    assert trainjob["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert trainjob["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "2"
    # The TrainJob's training pods ("node") land where the Job's would: same selector and
    # GPU toleration, given as Kubeflow Trainer's podTemplateOverrides; its spec is pod spec.
    (override,) = trainjob["spec"]["podTemplateOverrides"]
    assert override["targetJobs"] == [{"name": "node"}]
    assert override["spec"] == {k: pod[k] for k in ("nodeSelector", "tolerations")}
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
             "spec": {**override["spec"], "containers": [{"name": "c", "image": "i"}]}}  # fmt: skip
    kubernetes_validate.validate(probe, KUBERNETES_VERSION, strict=True)
    cpu_only = JobRecord.new(model="tiny-lm@production", dataset="support")
    assert "podTemplateOverrides" not in render_trainjob(cpu_only, spec, settings)["spec"]


def test_job_conditions_become_outcomes() -> None:
    assert job_outcome({}) is None
    assert job_outcome({"conditions": [{"type": "Complete", "status": "True"}]}).exit_code == 0
    failed = job_outcome(
        {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    )
    assert failed is not None and failed.exit_code == 1 and "BackoffLimit" in failed.detail


def test_worker_tolerations_are_checked_by_the_schema_and_by_the_service(
    render_error: Callable[..., str], tmp_path: Path
) -> None:
    bad = render_error(TRAINING_VALUES, sets=("training.workerTolerations[0].operator=Maybe",))
    assert "workerTolerations" in bad and "operator" in bad
    extra = render_error(TRAINING_VALUES, sets=("training.workerTolerations[0].colour=red",))
    assert "colour" in extra
    keyless = tmp_path / "keyless.yaml"  # operator Equal needs a key
    keyless.write_text("training:\n  workerTolerations: [{value: x, effect: NoSchedule}]\n")
    assert "missing property 'key'" in render_error(TRAINING_VALUES, keyless)
    for flag, why in (
        ("=b", "expected KEY"),
        ("*=b", "takes no value"),
        ("a:Sometimes", "effect must be"),
        ("a:NoSchedule@5", "@SECONDS"),
        ("a:NoExecute@soon", "@SECONDS"),
    ):
        with pytest.raises(InvalidInput, match=why):
            TrainingSettings(worker_tolerations=(flag,))
    assert TrainingSettings(worker_tolerations=("*",)).tolerations == [{"operator": "Exists"}]
