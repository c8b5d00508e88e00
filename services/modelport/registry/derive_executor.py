"""Where derive jobs run: worker processes beside the registry, or Kubernetes Jobs.

Both start the same worker, `modelport models derive-worker --registry ADDR
--job ID` with the job's token in MODELPORT_DERIVE_TOKEN; it talks to the
registry over gRPC like any client (fetches the parent and the data, reports
progress, uploads the child). With TLS on the registry's port the worker dials
it with TLS too (a CA, a client certificate for mutual TLS: `WorkerTls`, or in a
Job the Secret named by --derive-tls-secret), and with access control on, the
job's token is its credential (`Bearer mpd_<job>_<token>`, confined to the job's
model). What differs is only how it is started and how
its end is noticed: a local process's exit status, or the Job's status. A
worker that ends without finishing its job fails the job with what it said.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from modelport.registry.derive_jobs import DeriveJobInfo, DeriveJobs, JobState

log = logging.getLogger(__name__)

TOKEN_ENV = "MODELPORT_DERIVE_TOKEN"
STDERR_TAIL = 2000
# Starts of a worker that a signal kills before it claims its job (it did no work).
SPAWN_ATTEMPTS = 3


# Where a Job mounts --derive-tls-secret (cert-manager's key names).
TLS_MOUNT = "/etc/modelport/derive-tls"


@dataclass(frozen=True)
class WorkerTls:
    """The files a worker dials the registry with (paths on the worker's machine)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str = ""

    def args(self) -> list[str]:
        args = ["--tls"]
        for flag, value in (
            ("--tls-ca-file", self.ca_file),
            ("--tls-cert-file", self.cert_file),
            ("--tls-key-file", self.key_file),
            ("--tls-server-name", self.server_name),
        ):
            if value:
                args += [flag, str(value)]
        return args


def worker_args(registry: str, job_id: str, tls: WorkerTls | None = None) -> list[str]:
    args = ["models", "derive-worker", "--registry", registry, "--job", job_id]
    return args + (tls.args() if tls is not None else [])


# What a worker inherits from the registry's environment: how to find and run
# Python, torch and the Hugging Face libraries, and modelport's own settings. Not
# the rest (object-store credentials and other secrets the registry holds are not
# the worker's: it reaches the registry over gRPC with its job token).
INHERITED = ("PATH", "HOME", "USER", "LANG", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
             "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "NO_PROXY", "no_proxy",
             "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")  # fmt: skip
INHERITED_PREFIXES = ("MODELPORT_", "LC_", "OMP_", "MKL_", "KMP_", "TORCH", "HF_",
                      "TRANSFORMERS_", "TOKENIZERS_", "CUDA_", "NVIDIA_", "GRPC_")  # fmt: skip


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in environ.items()
            if key in INHERITED or key.startswith(INHERITED_PREFIXES)}  # fmt: skip


def start_worker_process(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a worker with CPython's subprocess (vfork, then exec), never the event loop's.

    Under uvloop, `asyncio.create_subprocess_exec` is libuv's uv_spawn, which calls
    fork(): the child runs every pthread_atfork handler, and gRPC's restart its
    EventEngine threads in the copy of this many-threaded process. One of them could
    crash before the exec (SIGSEGV in cygrpc, no output from the worker; a core
    showed the child's main thread inside execve). vfork runs no fork handlers.
    """
    return subprocess.Popen(
        command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


class DeriveExecutor(Protocol):
    name: str

    def submit(self, job: DeriveJobInfo, token: str, needs_gpu: bool) -> None: ...

    async def close(self) -> None: ...


class LocalExecutor:
    """At most `slots` worker processes at a time on this machine; the rest queue."""

    name = "local"

    def __init__(
        self,
        jobs: DeriveJobs,
        address: Callable[[], str],
        slots: int = 1,
        tls: WorkerTls | None = None,
    ) -> None:
        self.jobs = jobs
        self.address = address
        self.tls = tls
        self._slots = asyncio.Semaphore(max(slots, 1))
        self._tasks: set[asyncio.Task[None]] = set()
        self._processes: set[subprocess.Popen[bytes]] = set()

    def submit(self, job: DeriveJobInfo, token: str, needs_gpu: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job.id, token))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job_id: str, token: str) -> None:
        async with self._slots:
            for attempt in range(SPAWN_ATTEMPTS):
                returncode, tail = await self._start_worker(job_id, token)
                if returncode is None or returncode == 0:
                    return
                # A worker killed by a signal before it claimed the job did no work
                # and touched nothing: start it again, as a Job's backoff would.
                claimed = await asyncio.to_thread(self._claimed, job_id)
                if returncode < 0 and not claimed and attempt < SPAWN_ATTEMPTS - 1:
                    log.warning(
                        "derive worker for job %s died by signal %s before starting: %s; "
                        "starting it again",
                        job_id, -returncode, tail or "no output",
                    )  # fmt: skip
                    continue
                log.warning("derive worker for job %s exited %s: %s", job_id, returncode, tail)
                message = f"worker exited with status {returncode}: {tail or 'no output'}"
                await asyncio.to_thread(self.jobs.fail, job_id, message)
                return

    def _claimed(self, job_id: str) -> bool:
        return self.jobs.get(job_id).state != JobState.QUEUED

    async def _start_worker(self, job_id: str, token: str) -> tuple[int | None, str]:
        """(exit status, the end of its stderr); None when it could not start."""
        # -X faulthandler: a worker that crashes in native code says where.
        command = [sys.executable, "-X", "faulthandler", "-m", "modelport.cli",
                   *worker_args(self.address(), job_id, self.tls)]  # fmt: skip
        env = {**worker_environment(os.environ), TOKEN_ENV: token}
        try:
            process = await asyncio.to_thread(start_worker_process, command, env)
        except OSError as exc:
            await asyncio.to_thread(self.jobs.fail, job_id, f"worker did not start: {exc}")
            return None, ""
        self._processes.add(process)
        try:
            _, stderr = await asyncio.to_thread(process.communicate)
        finally:
            self._processes.discard(process)
        tail = stderr.decode(errors="replace")[-STDERR_TAIL:].strip()
        return process.returncode, tail

    async def close(self) -> None:
        for process in list(self._processes):
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass(frozen=True)
class KubernetesJobSettings:
    namespace: str
    image: str
    registry_address: str  # how a Job's pod reaches the registry (its Service)
    gpu_node_selector: dict[str, str]
    gpu_resource: str = "nvidia.com/gpu"
    cpu_request: str = "1"
    memory_limit: str = "8Gi"
    deadline_seconds: int = 3600
    service_account: str = ""
    poll_seconds: float = 5.0
    labels: dict[str, str] = field(default_factory=dict)  # on the pods, for network policies
    tls_secret: str = ""  # ca.crt, tls.crt, tls.key: the worker dials the registry with TLS
    tls_server_name: str = ""


def job_manifests(
    settings: KubernetesJobSettings, job: DeriveJobInfo, needs_gpu: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Secret holding the token, Job running the worker) for one derive job."""
    name = f"modelport-derive-{job.id[:12]}"
    labels = {
        "app.kubernetes.io/name": "modelport",
        "app.kubernetes.io/component": "derive",
        **settings.labels,
        "modelport.io/derive-job": job.id,
        "modelport.io/model": job.model,
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": labels},
        "type": "Opaque",
        "stringData": {"token": ""},  # filled by the caller, never logged
    }
    resources: dict[str, Any] = {
        "requests": {"cpu": settings.cpu_request, "memory": "1Gi"},
        "limits": {"memory": settings.memory_limit},
    }
    tls = None
    if settings.tls_secret:
        tls = WorkerTls(
            Path(TLS_MOUNT, "ca.crt"),
            Path(TLS_MOUNT, "tls.crt"),
            Path(TLS_MOUNT, "tls.key"),
            settings.tls_server_name,
        )
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "derive",
                "image": settings.image,
                "args": worker_args(settings.registry_address, job.id, tls),
                "env": [
                    {
                        "name": TOKEN_ENV,
                        "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}},
                    }
                ],
                "resources": resources,
            }
        ],
    }
    if tls is not None:
        pod["volumes"] = [
            {"name": "tls", "secret": {"secretName": settings.tls_secret, "defaultMode": 0o440}}
        ]
        pod["containers"][0]["volumeMounts"] = [
            {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True}
        ]
    if settings.service_account:
        pod["serviceAccountName"] = settings.service_account
    if needs_gpu:  # fp8 and 2:4 sparsity only run on a GPU node
        pod["nodeSelector"] = dict(settings.gpu_node_selector)
        resources["limits"][settings.gpu_resource] = 1
        pod["tolerations"] = [
            {"key": settings.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}
        ]
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.deadline_seconds,
            "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    return secret, manifest


class KubernetesExecutor:
    """One Kubernetes Job per derive job (the chart gives the registry the RBAC for it)."""

    name = "kubernetes"

    def __init__(self, jobs: DeriveJobs, settings: KubernetesJobSettings, api_client: Any = None):
        self.jobs = jobs
        self.settings = settings
        self._api_client = api_client
        self._tasks: set[asyncio.Task[None]] = set()

    def _clients(self) -> tuple[Any, Any]:
        from kubernetes import client, config

        if self._api_client is None:
            config.load_incluster_config()
            self._api_client = client.ApiClient()
        return client.BatchV1Api(self._api_client), client.CoreV1Api(self._api_client)

    def submit(self, job: DeriveJobInfo, token: str, needs_gpu: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job, token, needs_gpu))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _create(self, job: DeriveJobInfo, token: str, needs_gpu: bool) -> str:
        batch, core = self._clients()
        secret, manifest = job_manifests(self.settings, job, needs_gpu)
        secret["stringData"] = {"token": token}
        namespace = self.settings.namespace
        core.create_namespaced_secret(namespace, secret)
        created = batch.create_namespaced_job(namespace, manifest)
        # The Secret goes when its Job does (garbage collection by owner).
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": created.metadata.name,
            "uid": created.metadata.uid,
        }
        core.patch_namespaced_secret(
            secret["metadata"]["name"], namespace, {"metadata": {"ownerReferences": [owner]}}
        )
        return str(created.metadata.name)

    def _status(self, name: str) -> tuple[bool, str]:
        """(ended, why it failed or "")."""
        batch, _ = self._clients()
        status = batch.read_namespaced_job_status(name, self.settings.namespace).status
        if status.succeeded:
            return True, ""
        if status.failed:
            reasons = [
                c.message or c.reason for c in (status.conditions or []) if c.type == "Failed"
            ]
            return True, "; ".join(r for r in reasons if r) or "its pod failed"
        return False, ""

    async def _run(self, job: DeriveJobInfo, token: str, needs_gpu: bool) -> None:
        try:
            name = await asyncio.to_thread(self._create, job, token, needs_gpu)
        except Exception as exc:
            log.exception("derive job %s: could not create its Kubernetes Job", job.id)
            await asyncio.to_thread(self.jobs.fail, job.id, f"Kubernetes Job not created: {exc}")
            return
        log.info("derive job %s runs as Kubernetes Job %s", job.id, name)
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            try:
                ended, why = await asyncio.to_thread(self._status, name)
            except Exception as exc:  # the API server may blip: keep watching
                log.warning("derive job %s: reading Job %s failed: %s", job.id, name, exc)
                continue
            if ended:
                if why:
                    await asyncio.to_thread(self.jobs.fail, job.id, f"Kubernetes Job {name}: {why}")
                return

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
