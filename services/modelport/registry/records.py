"""What the registry store hands out: plain frozen records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelport.artifacts.archive_checks import Signature
from modelport.artifacts.refs import Ref, check_alias_name
from modelport.errors import InvalidInput


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    labels: dict[str, str]
    created_at: datetime
    aliases: dict[str, int]
    latest_version: int
    version_count: int


@dataclass(frozen=True)
class Lineage:
    """How a version was made from its parent (the parent itself is `VersionInfo.parent`)."""

    method: str = ""
    parameters: dict[str, str] = field(default_factory=dict)
    job: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "parameters": dict(self.parameters), "job": self.job}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Lineage:
        data = data or {}
        return cls(
            method=str(data.get("method", "")),
            parameters={str(k): str(v) for k, v in (data.get("parameters") or {}).items()},
            job=str(data.get("job", "")),
        )


class VersionStatus:
    NONE = ""  # pushed by hand: no gate was asked for
    ACCEPTED = "accepted"
    REJECTED = "rejected"


@dataclass(frozen=True)
class VersionInfo:
    model: str
    version: int
    sha256: str
    size_bytes: int
    created_at: datetime
    labels: dict[str, str]
    metrics: dict[str, float]
    parent: str
    signature: Signature
    model_file: str
    aliases: tuple[str, ...] = ()
    lineage: Lineage = field(default_factory=Lineage)
    status: str = VersionStatus.NONE


@dataclass(frozen=True)
class AliasInfo:
    model: str
    alias: str
    version: int
    previous_version: int
    updated_at: datetime
    revision: int


@dataclass(frozen=True)
class AliasMove:
    alias: str
    version: int  # 0: deleted
    moved_at: datetime
    revision: int


@dataclass(frozen=True)
class Resolved:
    model: str
    version: int
    sha256: str
    alias: str
    revision: int
    size_bytes: int


@dataclass(frozen=True)
class Policy:
    """A model's traffic policy: a weighted split by alias, a shadow, or a fan-out."""

    split: tuple[tuple[str, int], ...] = ()
    shadow_alias: str = ""
    ensemble: tuple[str, ...] = ()
    scatter: bool = False
    revision: int = 0

    def is_empty(self) -> bool:
        return not (self.split or self.shadow_alias or self.ensemble or self.scatter)

    def check(self, model: str) -> None:
        seen: set[str] = set()
        for alias, weight in self.split:
            check_alias_name(model, alias)
            if alias in seen:
                raise InvalidInput(f"model '{model}': policy split names alias '{alias}' twice")
            seen.add(alias)
            if weight <= 0:
                raise InvalidInput(
                    f"model '{model}': policy split weight for '{alias}' must be positive"
                )
        if self.shadow_alias:
            check_alias_name(model, self.shadow_alias)
        if self.ensemble and self.scatter:
            raise InvalidInput(f"model '{model}': a policy is an ensemble or a scatter, not both")
        for member in self.ensemble:
            Ref.parse(member)

    def to_json(self) -> dict[str, Any]:
        return {
            "split": [[alias, weight] for alias, weight in self.split],
            "shadow_alias": self.shadow_alias,
            "ensemble": list(self.ensemble),
            "scatter": self.scatter,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], revision: int) -> Policy:
        return cls(
            split=tuple((str(a), int(w)) for a, w in data.get("split", [])),
            shadow_alias=str(data.get("shadow_alias", "")),
            ensemble=tuple(data.get("ensemble", [])),
            scatter=bool(data.get("scatter", False)),
            revision=revision,
        )


@dataclass(frozen=True)
class PoolPlacement:
    """Whether the shared pool serves a model, how readily it evicts it, and its size."""

    pooled: bool = False
    priority: int = 0
    memory_bytes: int = 0  # 0: the size of the version's archive
    revision: int = 0

    def check(self, model: str) -> None:
        if self.memory_bytes < 0:
            raise InvalidInput(
                f"model '{model}': pool placement memory_bytes must be 0 (the archive's "
                f"size) or positive, not {self.memory_bytes}"
            )
        if not self.pooled and (self.priority or self.memory_bytes):
            raise InvalidInput(f"model '{model}': a priority or memory estimate needs pooled: true")


class EventKind:
    MODEL_CREATED = "MODEL_CREATED"
    MODEL_DELETED = "MODEL_DELETED"
    VERSION_ADDED = "VERSION_ADDED"
    VERSION_DELETED = "VERSION_DELETED"
    ALIAS_MOVED = "ALIAS_MOVED"
    ALIAS_DELETED = "ALIAS_DELETED"
    POLICY_CHANGED = "POLICY_CHANGED"
    DERIVE_PROGRESS = "DERIVE_PROGRESS"
    DERIVE_FINISHED = "DERIVE_FINISHED"
    POOL_CHANGED = "POOL_CHANGED"


@dataclass(frozen=True)
class Event:
    revision: int
    kind: str
    model: str
    version: int = 0
    alias: str = ""
    previous_version: int = 0
    at: datetime | None = None
    job: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewVersion:
    """What an upload brings besides its archive."""

    model: str
    labels: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    parent: str = ""
    aliases: tuple[str, ...] = ()
    create_model: bool = False
    description: str = ""
    lineage: Lineage = field(default_factory=Lineage)
    # A derive job's worker uploading the job's child (with the job's token).
    derive_job: str = ""
    derive_token: str = ""
    # Move `aliases` even where the new version's signature differs from the current one.
    force: bool = False
