"""Registering a finished job's export: one registry upload, with lineage, or nothing.

The version is pushed as a child of the base (`parent`), labelled with the
job, the dataset's sha256, the method and the hyperparameters, carrying the
final metrics, and the job's aliases move in the same registry transaction.
Before pushing, a version already labelled with this job is looked for: a
service that crashed after the upload but before recording it finds it
instead of registering twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelport.errors import ModelportError

JOB_LABEL = "modelport.io/training-job"
DATASET_LABEL = "modelport.io/dataset-sha256"
METHOD_LABEL = "modelport.io/training-method"
PARAMS_LABEL = "modelport.io/hyperparameters"
SUFFIX_LABEL = "modelport.io/suffix"


def lineage_labels(job: Any) -> dict[str, str]:
    labels = {
        JOB_LABEL: job.id,
        DATASET_LABEL: job.dataset_sha256,
        METHOD_LABEL: job.method.value if hasattr(job.method, "value") else str(job.method),
        PARAMS_LABEL: json.dumps(job.hyperparameters, sort_keys=True),
        "modelport.io/dataset": job.dataset,
        "modelport.io/seed": str(job.seed),
    }
    if job.suffix:
        labels[SUFFIX_LABEL] = job.suffix
    return labels


def register(
    registry_address: str,
    output_dir: Path,
    *,
    model: str,
    parent: str,
    labels: dict[str, str],
    metrics: dict[str, float],
    aliases: list[str],
    description: str = "",
) -> str:
    """Push `output_dir` as `model`'s next version; returns "model:version"."""
    from modelport.client.channel import ModelportClientError
    from modelport.client.registry import RegistryClient

    with RegistryClient(registry_address) as registry:
        try:
            for version in registry.list_versions(model):
                if version.labels.get(JOB_LABEL) == labels[JOB_LABEL]:
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
