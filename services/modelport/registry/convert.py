"""Registry records ↔ `modelport.registry.v1` messages, in one place."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from modelport.artifacts.archive_checks import Signature
from modelport.errors import InvalidInput
from modelport.proto.modelport.registry.v1 import registry_pb2 as pb
from modelport.registry.records import (
    AliasInfo,
    AliasMove,
    Event,
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
    )
