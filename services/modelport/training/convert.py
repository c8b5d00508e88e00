"""Job records and events ↔ `modelport.training.v1` messages, in one place."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from modelport.proto.modelport.training.v1 import training_pb2 as pb
from modelport.training.jobs import Hyperparameters, JobRecord, JobRequest, Method, Status

_METHODS = {Method.AUTO: pb.METHOD_AUTO, Method.FULL: pb.METHOD_FULL, Method.LORA: pb.METHOD_LORA}
_METHODS_BACK = {v: k for k, v in _METHODS.items()}
_STATUSES = {
    Status.VALIDATING: pb.VALIDATING,
    Status.QUEUED: pb.QUEUED,
    Status.RUNNING: pb.RUNNING,
    Status.SUCCEEDED: pb.SUCCEEDED,
    Status.FAILED: pb.FAILED,
    Status.CANCELLED: pb.CANCELLED,
}
STATUSES_BACK = {v: k for k, v in _STATUSES.items()}
_KINDS = {
    "status": pb.JobEvent.STATUS,
    "progress": pb.JobEvent.PROGRESS,
    "eval": pb.JobEvent.EVAL,
    "checkpoint": pb.JobEvent.CHECKPOINT,
    "log": pb.JobEvent.LOG,
}
_KINDS_BACK = {v: k for k, v in _KINDS.items()}
_PARAM_FIELDS = [f.name for f in pb.Hyperparameters.DESCRIPTOR.fields]


def _stamp(value: str | float | None) -> Timestamp:
    stamp = Timestamp()
    if isinstance(value, (int, float)) and value:
        stamp.FromDatetime(datetime.fromtimestamp(value, UTC))
    elif isinstance(value, str) and value:
        stamp.FromDatetime(datetime.fromisoformat(value))
    return stamp


def params_msg(values: dict[str, Any]) -> pb.Hyperparameters:
    return pb.Hyperparameters(**{k: v for k, v in values.items() if k in _PARAM_FIELDS})


def params_from_msg(message: pb.Hyperparameters) -> Hyperparameters:
    return Hyperparameters(
        # The fields are proto3 `optional`: unset means `auto`.
        **{name: getattr(message, name) for name in _PARAM_FIELDS if message.HasField(name)}  # type: ignore[arg-type]
    )


def request_from_msg(message: pb.CreateJobRequest) -> JobRequest:
    return JobRequest(
        model=message.model,
        dataset=message.dataset,
        method=_METHODS_BACK.get(message.method, Method.AUTO),
        hyperparameters=params_from_msg(message.hyperparameters),
        suffix=message.suffix,
        seed=message.seed,
        aliases=tuple(message.aliases),
        workers=message.workers or 1,
        then_derive=message.then_derive,
        gpus_per_worker=message.gpus_per_worker,
    )


def job_msg(job: JobRecord) -> pb.Job:
    return pb.Job(
        id=job.id,
        model=job.model,
        base_version=job.base_version,
        dataset=job.dataset,
        dataset_sha256=job.dataset_sha256,
        method=_METHODS[job.method],
        hyperparameters=params_msg(job.hyperparameters),
        suffix=job.suffix,
        seed=job.seed,
        aliases=job.aliases,
        workers=job.workers,
        status=_STATUSES[job.status],
        error=pb.JobError(code=job.error_code, message=job.error_message)
        if job.error_code
        else None,
        created_at=_stamp(job.created_at),
        started_at=_stamp(job.started_at),
        finished_at=_stamp(job.finished_at),
        progress=pb.Progress(
            step=job.step, total_steps=job.total_steps, epoch=job.epoch, eta_seconds=job.eta_seconds
        ),
        metrics=job.metrics,
        checkpoints=[
            pb.Checkpoint(step=c.step, metrics=c.metrics, created_at=_stamp(c.created_at))
            for c in job.checkpoints
        ],
        result_version=job.result_version,
        executor=job.executor,
        trained_tokens=job.trained_tokens,
        restarts=job.restarts,
        then_derive=job.then_derive,
        gpus_per_worker=job.gpus_per_worker,
        dataset_counts=job.dataset_counts,
        requested_by=pb.Identity(**job.requested_by) if job.requested_by else None,
        derive_job=job.derive_job,
        derived_version=job.derived_version,
    )


def event_msg(job_id: str, event: dict[str, Any]) -> pb.JobEvent:
    message = pb.JobEvent(
        seq=int(event.get("seq", 0)),
        job_id=job_id,
        kind=_KINDS.get(event.get("kind", "log"), pb.JobEvent.LOG),
        at=_stamp(event.get("at")),
        message=str(event.get("message", "")),
        metrics=event.get("metrics") or {},
        result_version=str(event.get("result_version", "")),
    )
    if "status" in event:
        message.status = _STATUSES[Status(event["status"])]
    if "step" in event:
        message.progress.CopyFrom(
            pb.Progress(
                step=int(event["step"]),
                total_steps=int(event.get("total_steps", 0)),
                epoch=int(event.get("epoch", 0)),
                eta_seconds=float(event.get("eta_seconds", 0.0)),
            )
        )
    if event.get("error_code"):
        message.error.CopyFrom(
            pb.JobError(code=event["error_code"], message=event.get("error_message", ""))
        )
    return message


def report_request(
    job_id: str, attempt: str, kind: str, fields: dict[str, Any]
) -> pb.ReportEventsRequest:
    """A worker's event as sent to ReportEvents (its kind travels in `message` for the kinds
    the public enum lacks: resumed, done, failed)."""
    event = pb.JobEvent(
        kind=_KINDS.get(kind, pb.JobEvent.LOG),
        message=kind if kind not in _KINDS else str(fields.get("message", "")),
        metrics={k: float(v) for k, v in (fields.get("metrics") or {}).items()},
        result_version=str(fields.get("result_version", "")),
    )
    if "step" in fields:
        event.progress.CopyFrom(
            pb.Progress(
                step=int(fields["step"]),
                total_steps=int(fields.get("total_steps", 0)),
                epoch=int(fields.get("epoch", 0)),
                eta_seconds=float(fields.get("eta_seconds", 0.0)),
            )
        )
    if fields.get("code"):
        event.error.CopyFrom(
            pb.JobError(code=str(fields["code"]), message=str(fields.get("message", "")))
        )
    return pb.ReportEventsRequest(id=job_id, attempt=attempt, events=[event])


def reported_events(request: pb.ReportEventsRequest) -> list[dict[str, Any]]:
    events = []
    for message in request.events:
        kind = _KINDS_BACK.get(message.kind, "log")
        if kind == "log" and message.message in ("resumed", "done", "failed"):
            kind = message.message
        event: dict[str, Any] = {"kind": kind, "metrics": dict(message.metrics)}
        if message.HasField("progress"):
            event.update(
                step=message.progress.step,
                total_steps=message.progress.total_steps,
                epoch=message.progress.epoch,
                eta_seconds=message.progress.eta_seconds,
            )
        if message.result_version:
            event["result_version"] = message.result_version
        if message.HasField("error"):
            event.update(code=message.error.code, message=message.error.message)
        events.append(event)
    return events
