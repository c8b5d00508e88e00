"""Registry records ↔ `modelport.registry.v1` messages, in one place."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from modelport.artifacts.archive_checks import Signature
from modelport.auth.audit import AuditEvent, AuditQuery
from modelport.errors import InvalidInput
from modelport.proto.modelport.registry.v1 import derive_pb2 as dpb
from modelport.proto.modelport.registry.v1 import registry_pb2 as pb
from modelport.registry.derive_jobs import DeriveJobInfo, DeriveJobRequest
from modelport.registry.records import (
    AliasInfo,
    AliasMove,
    Event,
    Lineage,
    ModelInfo,
    NewVersion,
    Policy,
    PoolPlacement,
    Resolved,
    VersionInfo,
)


def timestamp(value: datetime | None) -> Timestamp:
    stamp = Timestamp()
    if value is not None:
        stamp.FromDatetime(value)
    return stamp


def model_msg(info: ModelInfo) -> pb.Model:
    return pb.Model(
        name=info.name,
        description=info.description,
        labels=info.labels,
        created_at=timestamp(info.created_at),
        aliases=info.aliases,
        latest_version=info.latest_version,
        version_count=info.version_count,
    )


def signature_msg(sig: Signature) -> pb.Signature:
    def specs(items):  # type: ignore[no-untyped-def]
        return [pb.TensorSpec(name=s.name, datatype=s.datatype, dims=list(s.dims)) for s in items]

    return pb.Signature(
        inputs=specs(sig.inputs),
        outputs=specs(sig.outputs),
        max_batch_size=sig.max_batch_size,
        platform=sig.platform,
    )


def version_msg(info: VersionInfo) -> pb.ModelVersion:
    return pb.ModelVersion(
        model=info.model,
        version=info.version,
        sha256=info.sha256,
        size_bytes=info.size_bytes,
        created_at=timestamp(info.created_at),
        labels=info.labels,
        metrics=info.metrics,
        parent=info.parent,
        signature=signature_msg(info.signature),
        aliases=list(info.aliases),
        model_file=info.model_file,
        lineage=dpb.Lineage(
            parent=info.parent,
            method=info.lineage.method,
            parameters=info.lineage.parameters,
            job=info.lineage.job,
        ),
        status=info.status,
    )


def alias_msg(info: AliasInfo) -> pb.Alias:
    return pb.Alias(
        model=info.model,
        alias=info.alias,
        version=info.version,
        previous_version=info.previous_version,
        updated_at=timestamp(info.updated_at),
        revision=info.revision,
    )


def alias_move_msg(move: AliasMove) -> pb.AliasMove:
    return pb.AliasMove(
        alias=move.alias,
        version=move.version,
        moved_at=timestamp(move.moved_at),
        revision=move.revision,
    )


def resolved_msg(resolved: Resolved) -> pb.ResolveResponse:
    return pb.ResolveResponse(
        model=resolved.model,
        version=resolved.version,
        sha256=resolved.sha256,
        alias=resolved.alias,
        revision=resolved.revision,
        size_bytes=resolved.size_bytes,
    )


def policy_msg(model: str, policy: Policy) -> pb.TrafficPolicy:
    msg = pb.TrafficPolicy(
        model=model,
        split=[pb.AliasWeight(alias=a, weight=w) for a, w in policy.split],
        shadow_alias=policy.shadow_alias,
        revision=policy.revision,
    )
    if policy.ensemble:
        msg.ensemble.members.extend(policy.ensemble)
    elif policy.scatter:
        msg.scatter.SetInParent()
    return msg


def placement_msg(model: str, placement: PoolPlacement) -> pb.PoolPlacement:
    return pb.PoolPlacement(
        model=model,
        pooled=placement.pooled,
        priority=placement.priority,
        memory_bytes=placement.memory_bytes,
        revision=placement.revision,
    )


def placement_from_msg(msg: pb.PoolPlacement) -> PoolPlacement:
    return PoolPlacement(msg.pooled, msg.priority, msg.memory_bytes)


def policy_from_msg(msg: pb.TrafficPolicy) -> Policy:
    kind = msg.WhichOneof("kind")
    if kind == "ensemble" and not msg.ensemble.members:
        raise InvalidInput(f"model '{msg.model}': an ensemble policy needs members")
    return Policy(
        split=tuple((w.alias, int(w.weight)) for w in msg.split),
        shadow_alias=msg.shadow_alias,
        ensemble=tuple(msg.ensemble.members) if kind == "ensemble" else (),
        scatter=kind == "scatter",
    )


def event_msg(event: Event) -> pb.WatchEvent:
    return pb.WatchEvent(
        revision=event.revision,
        kind=pb.WatchEvent.Kind.Value(event.kind),
        model=event.model,
        version=event.version,
        alias=event.alias,
        previous_version=event.previous_version,
        at=timestamp(event.at),
        job=event.job,
        stage=str(event.detail.get("stage", "")),
        progress=float(event.detail.get("progress", 0.0)),
        message=str(event.detail.get("message", "")),
    )


def new_version(header: pb.UploadHeader) -> NewVersion:
    return NewVersion(
        model=header.model,
        labels=dict(header.labels),
        metrics=dict(header.metrics),
        parent=header.parent,
        aliases=tuple(header.aliases),
        create_model=header.create_model,
        description=header.description,
        lineage=Lineage(
            method=header.lineage.method,
            parameters=dict(header.lineage.parameters),
        ),
        derive_job=header.derive_job,
        derive_token=header.derive_token,
        force=header.force,
    )


def audit_event_msg(event: AuditEvent) -> pb.AuditEvent:
    msg = pb.AuditEvent(
        id=event.id,
        service=event.service,
        action=event.action,
        operation=event.operation,
        outcome=event.outcome,
        code=event.code,
        message=event.message,
        tenant=event.tenant,
        subject=event.subject,
        method=event.method,
        peer=event.peer,
        model=event.model,
        version=event.version,
        details=dict(event.details),
        trace_id=event.trace_id,
    )
    msg.time.FromNanoseconds(int(event.time * 1e9))
    return msg


def audit_query(request: pb.ListAuditEventsRequest) -> AuditQuery:
    def seconds(ts: Timestamp, present: bool) -> float | None:
        return ts.ToNanoseconds() / 1e9 if present else None

    return AuditQuery(
        model=request.model,
        tenant=request.tenant,
        action=request.action,
        outcome=request.outcome,
        since=seconds(request.since, request.HasField("since")),
        until=seconds(request.until, request.HasField("until")),
        limit=request.limit or 100,
    )


def spec_msg(spec: dict[str, Any]) -> dpb.DeriveSpec:
    return dpb.DeriveSpec(
        prune=float(spec.get("prune", 0.0)),
        prune_pattern=str(spec.get("prune_pattern", "")),
        dtype=str(spec.get("dtype", "")),
        quantize=str(spec.get("quantize", "")),
        compile=str(spec.get("compile", "")),
    )


def derive_request(msg: dpb.DeriveRequest) -> DeriveJobRequest:
    spec = msg.spec
    return DeriveJobRequest(
        source=msg.source,
        spec={
            "prune": spec.prune,
            "prune_pattern": spec.prune_pattern,
            "dtype": spec.dtype,
            "quantize": spec.quantize,
            "compile": spec.compile,
        },
        eval_data=msg.eval_data,
        eval_format=msg.eval_format,
        metric=msg.metric,
        max_accuracy_drop=msg.max_accuracy_drop if msg.HasField("max_accuracy_drop") else None,
        relative_drop=msg.relative_drop,
        aliases=tuple(msg.aliases),
        force=msg.force,
        labels=dict(msg.labels),
    )


def job_msg(job: DeriveJobInfo) -> dpb.DeriveJob:
    settings = job.request
    msg = dpb.DeriveJob(
        id=job.id,
        state=dpb.DeriveJob.State.Value(job.state),
        model=job.model,
        parent=job.parent,
        spec=spec_msg(job.spec),
        metric=str(settings.get("metric", "")),
        relative_drop=bool(settings.get("relative_drop", False)),
        aliases=list(settings.get("aliases", [])),
        force=bool(settings.get("force", False)),
        stage=job.stage,
        progress=job.progress,
        message=job.message,
        child_version=job.child_version,
        verdict=job.verdict,
        metrics=job.metrics,
        executor=job.executor,
        created_at=timestamp(job.created_at),
        updated_at=timestamp(job.updated_at),
        eval_format=str(settings.get("eval_format", "")),
    )
    if settings.get("max_accuracy_drop") is not None:
        msg.max_accuracy_drop = float(settings["max_accuracy_drop"])
    return msg
