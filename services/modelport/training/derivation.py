"""`--then-derive`: after registration, a derive job in the registry on the fine-tuned version.

The registry runs derivations (quantization, casts) in its own worker pool
(`modelport models derive`, the compression issue); the training service only
asks for one through the registry's DeriveVersion RPC, on behalf of the job's
creator, and follows it to its end. The child is a version of the same model
whose lineage names the fine-tuned version as its parent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from modelport.errors import InvalidInput, ModelportError
from modelport.training.jobs import ModelKind
from modelport.training.registration import TENANT_LABEL, from_client_error, on_behalf_of

QUANTIZE = ("int8-weight-only", "int4-weight-only", "int8-dynamic", "fp8")
CASTS = ("fp16", "bf16")
# A decoder (Hugging Face folder) is derived weight-only (compression/decoder.py).
DECODER_METHODS = ("int8-weight-only", "int4-weight-only")
JOB_LABEL = "modelport.io/training-job"


def check(method: str) -> None:
    if method not in QUANTIZE + CASTS:
        raise InvalidInput(f"then_derive '{method}': expected one of {', '.join(QUANTIZE + CASTS)}")


def check_for(method: str, kind: ModelKind, base: str) -> None:
    """At validation, once the base's kind is known: nothing trains for a refused derive."""
    if kind is ModelKind.DECODER and method not in DECODER_METHODS:
        raise InvalidInput(
            f"then_derive '{method}': '{base}' is a decoder, derived weight-only "
            f"({' or '.join(DECODER_METHODS)})"
        )


@dataclass
class DeriveState:
    """What the training core needs of a registry derive job."""

    id: str
    finished: bool
    succeeded: bool
    stage: str = ""
    progress: float = 0.0
    message: str = ""
    child: str = ""  # "model:version" once stored
    verdict: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


def _state(job: object) -> DeriveState:
    from modelport.proto.modelport.registry.v1 import derive_pb2 as dpb

    j: dpb.DeriveJob = job  # type: ignore[assignment]
    return DeriveState(
        id=j.id,
        finished=j.state in (dpb.DeriveJob.SUCCEEDED, dpb.DeriveJob.FAILED),
        succeeded=j.state == dpb.DeriveJob.SUCCEEDED,
        stage=j.stage,
        progress=j.progress,
        message=j.message,
        child=f"{j.model}:{j.child_version}" if j.child_version else "",
        verdict=j.verdict,
        metrics=dict(j.metrics),
    )


def start(
    registry: str, version: str, method: str, labels: dict[str, str], on_behalf_of: str
) -> DeriveState:
    """Ask the registry to derive `method` from `version` ("model:version")."""
    from modelport.client.channel import ModelportClientError
    from modelport.client.registry import RegistryClient

    cast = method in CASTS
    try:
        with RegistryClient(registry, on_behalf_of=on_behalf_of) as client:
            found = client.derive(
                version,
                dtype=method if cast else "",
                quantize="" if cast else method,
                labels=labels,
            )
            return _state(found)
    except ModelportClientError as exc:
        raise from_client_error(exc, f"then_derive '{method}' of {version}") from None


def get(registry: str, derive_job: str) -> DeriveState:
    from modelport.client.channel import ModelportClientError
    from modelport.client.registry import RegistryClient

    try:
        with RegistryClient(registry) as client:
            return _state(client.get_derive_job(derive_job))
    except ModelportClientError as exc:
        raise from_client_error(exc, f"derive job {derive_job}") from None


async def run(
    registry: str,
    job: Any,
    *,
    say: Callable[[str], Awaitable[None]],
    save: Callable[[], Awaitable[Any]],
    poll_seconds: float = 0.5,
) -> str:
    """The job's `then_derive`, asked of the registry for the job's creator and followed
    to its end; returns the outcome for the job's status message. A derive that is
    refused or fails leaves the fine-tuned version registered: the message says why."""
    if job.derived_version:
        return f"derived {job.derived_version}"
    try:
        state = await follow(
            registry,
            job,
            on_behalf_of(job.requested_by),
            say,
            on_started=save,
            poll_seconds=poll_seconds,
        )
    except ModelportError as error:
        await say(f"then_derive {job.then_derive} could not run: {error}")
        return f"then_derive {job.then_derive} failed: {error}"
    if state is None:  # the job ended meanwhile (cancelled)
        return ""
    if not state.succeeded:
        return f"derive job {state.id} failed: {state.message}"
    job.derived_version = state.child
    await save()
    return f"derived {state.child} ({job.then_derive})"


async def follow(
    registry: str,
    job: Any,
    creator: str,
    say: Callable[[str], Awaitable[None]],
    *,
    on_started: Callable[[], Awaitable[Any]],
    poll_seconds: float = 0.5,
) -> DeriveState | None:
    """Start the job's derive (or find the one a previous service run started) and
    follow it: each new stage becomes a log event. None when `job` ended meanwhile."""
    if job.derive_job:
        state = await asyncio.to_thread(get, registry, job.derive_job)
    else:
        labels = {JOB_LABEL: job.id}
        if job.requested_by.get("tenant"):
            labels[TENANT_LABEL] = job.requested_by["tenant"]
        state = await asyncio.to_thread(
            start, registry, job.result_version, job.then_derive, labels, creator
        )
        job.derive_job = state.id
        await on_started()
        await say(f"derive job {state.id} started: {job.then_derive} of {job.result_version}")
    seen = ""
    while True:
        if job.status.terminal:
            return None
        if state.stage and state.stage != seen:
            seen = state.stage
            await say(f"derive: {state.stage} ({state.progress:.0%})")
        if state.finished:
            break
        await asyncio.sleep(poll_seconds)
        state = await asyncio.to_thread(get, registry, job.derive_job)
    if state.succeeded:
        numbers = ", ".join(f"{k}={v:.6g}" for k, v in sorted(state.metrics.items()))
        await say(
            f"derived {state.child} from {job.result_version} ({job.then_derive})"
            + (f", verdict {state.verdict}" if state.verdict else "")
            + (f": {numbers}" if numbers else "")
        )
    else:
        await say(f"derive job {state.id} failed: {state.message}")
    return state
