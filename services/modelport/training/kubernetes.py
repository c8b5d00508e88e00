"""The Kubernetes executor: one batch/v1 Job (or a Kubeflow TrainJob) per training job.

The pod runs the same worker as the local executor, under torchrun with one
process per worker (`--nproc-per-node`), GPUs requested per worker and the
operator's node selector. It fetches the base version and the dataset from
the registry itself, reports its events to this service's ReportEvents, and
registers the result (the same registration code, through the registry's
gRPC API). Status comes back from the Job's conditions (TrainJob: its
conditions). Where the TrainJob CRD answers in the namespace
(trainer.kubeflow.org/v1alpha1), a TrainJob on the `torch-distributed`
runtime is created instead of a Job.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.training.executors import Outcome
from modelport.training.jobs import JobRecord
from modelport.training.worker import WorkerSpec

log = logging.getLogger(__name__)

TRAINJOB_GROUP, TRAINJOB_VERSION, TRAINJOB_PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
WORK_DIR = "/work"
LABEL = "modelport.io/training-job"


@dataclass(frozen=True)
class KubernetesSettings:
    namespace: str = ""
    image: str = ""
    # How worker pods reach this service's gRPC port, e.g. mp-modelport-training:8004.
    service_address: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    # Tolerations of every worker pod (core/v1 Toleration objects), e.g. a dedicated pool.
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    use_trainjob: bool = True
    max_restarts: int = 2
    gpu_resource: str = "nvidia.com/gpu"
    service_account: str = ""
    trainjob_runtime: str = "torch-distributed"
    cpu_request: str = "1"
    memory_limit: str = "8Gi"


def object_name(job: JobRecord) -> str:
    return job.id.lower()[:63]


def _command(job: JobRecord, settings: KubernetesSettings) -> list[str]:
    run = (
        f"python -m torch.distributed.run --standalone --nproc-per-node={max(1, job.workers)} "
        f"--max-restarts={settings.max_restarts} -m modelport.training.worker {WORK_DIR}/spec.json"
    )
    return ["sh", "-c", f'printf %s "$MODELPORT_WORKER_SPEC" > {WORK_DIR}/spec.json && exec {run}']


def _resources(job: JobRecord, settings: KubernetesSettings) -> dict[str, Any]:
    resources: dict[str, Any] = {
        "requests": {"cpu": settings.cpu_request},
        "limits": {"memory": settings.memory_limit},
    }
    if job.gpus_per_worker:
        gpus = str(job.gpus_per_worker * max(1, job.workers))
        resources["requests"][settings.gpu_resource] = gpus
        resources["limits"][settings.gpu_resource] = gpus
    return resources


def _env(spec: WorkerSpec) -> list[dict[str, str]]:
    return [
        {"name": "MODELPORT_WORKER_SPEC", "value": json.dumps(vars(spec))},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]


def _placement(job: JobRecord, settings: KubernetesSettings) -> dict[str, Any]:
    """Where worker pods go: GPU jobs on the selected nodes, tolerating the GPU taint;
    every job tolerates what the operator configured (a toleration permits, never forces)."""
    placement: dict[str, Any] = {}
    if settings.node_selector and job.gpus_per_worker:
        placement["nodeSelector"] = dict(settings.node_selector)
    tolerations = [dict(t) for t in settings.tolerations]
    if job.gpus_per_worker:
        tolerations.append(
            {"key": settings.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}
        )
    if tolerations:
        placement["tolerations"] = tolerations
    if settings.service_account:
        placement["serviceAccountName"] = settings.service_account
    return placement


def render_job(job: JobRecord, spec: WorkerSpec, settings: KubernetesSettings) -> dict[str, Any]:
    """The batch/v1 Job for `job`: one pod, torchrun inside, retried by torchrun not by the Job."""
    labels = {
        "app.kubernetes.io/name": "modelport",
        "app.kubernetes.io/component": "training-worker",
        LABEL: job.id,
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "worker",
                "image": settings.image,
                "command": _command(job, settings),
                "env": _env(spec),
                "resources": _resources(job, settings),
                "volumeMounts": [{"name": "work", "mountPath": WORK_DIR}],
            }
        ],
        "volumes": [{"name": "work", "emptyDir": {}}],
    }
    pod.update(_placement(job, settings))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": object_name(job), "namespace": settings.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def render_trainjob(
    job: JobRecord, spec: WorkerSpec, settings: KubernetesSettings
) -> dict[str, Any]:
    """The Kubeflow Trainer v2 TrainJob for `job` on the torch-distributed runtime."""
    trainer: dict[str, Any] = {
        "image": settings.image,
        "command": _command(job, settings),
        "env": _env(spec),
        "numNodes": 1,
        "resourcesPerNode": _resources(job, settings),
    }
    body: dict[str, Any] = {"runtimeRef": {"name": settings.trainjob_runtime}, "trainer": trainer}
    placement = _placement(job, settings)
    if placement:
        # The runtime's pod template stays; its training pods ("node") get the placement.
        body["podTemplateOverrides"] = [{"targetJobs": [{"name": "node"}], "spec": placement}]
    return {
        "apiVersion": f"{TRAINJOB_GROUP}/{TRAINJOB_VERSION}",
        "kind": "TrainJob",
        "metadata": {
            "name": object_name(job),
            "namespace": settings.namespace,
            "labels": {LABEL: job.id},
        },
        "spec": body,
    }


def job_outcome(status: dict[str, Any]) -> Outcome | None:
    """From a Job's (or TrainJob's) status: None while running."""
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "Succeeded"):
            return Outcome(0)
        if condition.get("type") == "Failed":
            return Outcome(1, f"{condition.get('reason', '')}: {condition.get('message', '')}")
    if status.get("succeeded"):
        return Outcome(0)
    return None


class KubernetesExecutor:
    name = "kubernetes"
    reports_over_grpc = True

    def __init__(self, settings: KubernetesSettings) -> None:
        self.settings = settings
        self._api: Any = None

    def _client(self) -> Any:
        if self._api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                # The client reads KUBECONFIG once, when it is first imported; read it
                # now, so the variable in force when the executor starts is the one used.
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
            self._api = client
        return self._api

    def _namespace(self) -> str:
        if self.settings.namespace:
            return self.settings.namespace
        path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        return path.read_text().strip() if path.is_file() else "default"

    def _trainjobs_installed(self) -> bool:
        if not self.settings.use_trainjob:
            return False
        client = self._client()
        try:
            client.CustomObjectsApi().list_namespaced_custom_object(
                TRAINJOB_GROUP, TRAINJOB_VERSION, self._namespace(), TRAINJOB_PLURAL, limit=1
            )
        except client.ApiException as error:
            if error.status in (403, 404):
                return False
            raise
        return True

    def start(self, job: JobRecord, spec_path: Path, job_dir: Path) -> str:
        spec = WorkerSpec.read(spec_path)
        spec.work_dir = WORK_DIR
        spec.report_address = self.settings.service_address
        settings = KubernetesSettings(**{**vars(self.settings), "namespace": self._namespace()})
        client = self._client()
        if self._trainjobs_installed():
            body = render_trainjob(job, spec, settings)
            client.CustomObjectsApi().create_namespaced_custom_object(
                TRAINJOB_GROUP, TRAINJOB_VERSION, settings.namespace, TRAINJOB_PLURAL, body
            )
            return f"trainjob/{object_name(job)}"
        client.BatchV1Api().create_namespaced_job(
            settings.namespace, render_job(job, spec, settings)
        )
        return f"job/{object_name(job)}"

    def poll(self, job: JobRecord, handle: str) -> Outcome | None:
        kind, _, name = handle.partition("/")
        client = self._client()
        try:
            if kind == "trainjob":
                found = client.CustomObjectsApi().get_namespaced_custom_object(
                    TRAINJOB_GROUP, TRAINJOB_VERSION, self._namespace(), TRAINJOB_PLURAL, name
                )
                return job_outcome(found.get("status") or {})
            status = client.BatchV1Api().read_namespaced_job_status(name, self._namespace()).status
            return job_outcome(client.ApiClient().sanitize_for_serialization(status) or {})
        except client.ApiException as error:
            if error.status == 404:
                return Outcome(1, f"{handle} is gone from the cluster")
            raise

    def stop(self, job: JobRecord, handle: str) -> None:
        kind, _, name = handle.partition("/")
        if not name:
            return
        client = self._client()
        try:
            if kind == "trainjob":
                client.CustomObjectsApi().delete_namespaced_custom_object(
                    TRAINJOB_GROUP, TRAINJOB_VERSION, self._namespace(), TRAINJOB_PLURAL, name
                )
            else:
                client.BatchV1Api().delete_namespaced_job(
                    name, self._namespace(), propagation_policy="Background"
                )
        except client.ApiException as error:
            if error.status != 404:
                raise
        log.info("deleted %s (%s)", handle, shlex.quote(job.id))
