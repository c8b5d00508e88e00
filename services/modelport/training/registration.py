"""Registering a finished job's export: one registry upload, with lineage, or nothing.

The version is pushed as a child of the base (`parent`) with the registry's
`Lineage` (the one derived versions carry): method `fine-tune`, and as its
parameters the job, the training method, the dataset and its sha256, the
resolved hyperparameters and the seed; the final metrics go on the version,
and the job's aliases move in the same registry transaction. Before pushing,
a version whose lineage names this job is looked for: a service that crashed
after the upload but before recording it finds it instead of registering twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelport.errors import ModelportError

LINEAGE_METHOD = "fine-tune"
JOB_PARAMETER = "training_job"
SUFFIX_LABEL = "modelport.io/suffix"


TENANT_LABEL = "modelport.io/requested-by-tenant"


def on_behalf_of(requested_by: dict[str, str]) -> str:
    """ "tenant/subject" of a job's creator ("" when the service has no access control)."""
    if not requested_by.get("tenant"):
        return ""
    return f"{requested_by['tenant']}/{requested_by.get('subject', '')}"


def arguments(job: Any) -> dict[str, Any]:
    """`register`'s keyword arguments for a job (also what a worker in a cluster,
    which registers its own export, is given)."""
    return {
        "model": job.base_version.split(":")[0],
        "parent": job.base_version,
        "lineage": lineage_parameters(job),
        "labels": labels(job),
        "aliases": list(job.aliases),
        "requested_by": on_behalf_of(job.requested_by),
        "description": f"fine-tuned from {job.base_version} by {job.id}"
        + (f" ({job.suffix})" if job.suffix else ""),
    }


def lineage_parameters(job: Any) -> dict[str, str]:
    parameters = {
        JOB_PARAMETER: job.id,
        "method": job.method.value if hasattr(job.method, "value") else str(job.method),
        "dataset": job.dataset,
        "dataset_sha256": job.dataset_sha256,
        "hyperparameters": json.dumps(job.hyperparameters, sort_keys=True),
        "seed": str(job.seed),
        "workers": str(job.workers),
    }
    if on_behalf_of(job.requested_by):
        # The caller authenticated at the training service, not at the registry.
        parameters["requested_by"] = on_behalf_of(job.requested_by)
        parameters["requested_by_method"] = job.requested_by.get("method", "")
    return parameters


def labels(job: Any) -> dict[str, str]:
    found = {SUFFIX_LABEL: job.suffix} if job.suffix else {}
    if job.requested_by.get("tenant"):
        found[TENANT_LABEL] = job.requested_by["tenant"]
    return found


def register(
    registry_address: str,
    output_dir: Path,
    *,
    model: str,
    parent: str,
    lineage: dict[str, str],
    labels: dict[str, str],
    metrics: dict[str, float],
    aliases: list[str],
    description: str = "",
    requested_by: str = "",
) -> str:
    """Push `output_dir` as `model`'s next version; returns "model:version". The
    registry's audit events name `requested_by` ("tenant/subject") as the caller
    the training service acts for."""
    from modelport.client.channel import ModelportClientError
    from modelport.client.registry import RegistryClient
    from modelport.proto.modelport.registry.v1 import derive_pb2

    job_id = lineage[JOB_PARAMETER]
    with RegistryClient(registry_address, on_behalf_of=requested_by) as registry:
        try:
            for version in registry.list_versions(model):
                if version.lineage.parameters.get(JOB_PARAMETER) == job_id:
                    for alias in aliases:
                        registry.set_alias(model, version.version, alias)
                    return f"{model}:{version.version}"
        except ModelportClientError as exc:
            if exc.code is None or exc.code.name != "NOT_FOUND":
                raise _domain(exc) from None
        try:
            pushed = registry.push(
                output_dir,
                name=model,
                parent=parent,
                labels=labels,
                metrics=metrics,
                aliases=aliases,
                create_model=False,
                description=description,
                lineage=derive_pb2.Lineage(method=LINEAGE_METHOD, parameters=lineage),
            )
        except ModelportClientError as exc:
            raise _domain(exc) from None
    return f"{pushed.model}:{pushed.version}"


class RegistryRefused(ModelportError):
    """The registry said no: its status code carries over to the job's error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _domain(exc: Any, what: str = "registration failed") -> RegistryRefused:
    code = exc.code.name if exc.code is not None else "INTERNAL"
    return RegistryRefused(code, f"{what}: {exc.message}")


def from_client_error(exc: Any, what: str) -> RegistryRefused:
    return _domain(exc, what)
