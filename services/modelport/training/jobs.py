"""Fine-tuning jobs as plain records: statuses, methods, hyperparameters and their `auto` values.

Transport-free: the servicer maps these to `modelport.training.v1` messages,
the job store writes them as JSON, the workers read the resolved
hyperparameters from their spec.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from modelport.errors import InvalidInput


class Status(StrEnum):
    VALIDATING = "validating"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


class Method(StrEnum):
    AUTO = "auto"
    FULL = "full"
    LORA = "lora"


class ModelKind(StrEnum):
    """What the base version holds: a Hugging Face causal LM, or a torch.export program."""

    DECODER = "decoder"
    TENSOR = "tensor"


@dataclass(frozen=True)
class Hyperparameters:
    """None means `auto`: `resolve` picks a value from the model kind and the data size."""

    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    warmup_steps: int | None = None
    weight_decay: float | None = None
    max_seq_len: int | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    eval_every: int | None = None
    checkpoint_every: int | None = None
    max_steps: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hyperparameters:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"unknown hyperparameters {unknown}; known: {sorted(known)}")
        return cls(**data)

    def check(self) -> None:
        for name in (
            "epochs",
            "batch_size",
            "max_seq_len",
            "lora_rank",
            "eval_every",
            "checkpoint_every",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidInput(f"hyperparameter {name}={value}: must be at least 1")
        for name in ("warmup_steps", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidInput(f"hyperparameter {name}={value}: must not be negative")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise InvalidInput(
                f"hyperparameter learning_rate={self.learning_rate}: must be in (0, 1)"
            )
        if self.weight_decay is not None and not 0 <= self.weight_decay < 1:
            raise InvalidInput(
                f"hyperparameter weight_decay={self.weight_decay}: must be in [0, 1)"
            )
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            raise InvalidInput(f"hyperparameter lora_alpha={self.lora_alpha}: must be positive")

    def resolve(
        self, kind: ModelKind, method: Method, train_examples: int, workers: int
    ) -> Hyperparameters:
        """Every field set; batch sizes are multiples of the worker count (same global batch)."""
        self.check()
        decoder = kind is ModelKind.DECODER
        batch = self.batch_size or min(8 if decoder else 32, max(1, train_examples))
        if batch % workers:
            raise InvalidInput(
                f"hyperparameter batch_size={batch} must be a multiple of workers={workers} "
                "(each worker takes an equal share of the global batch)"
            )
        epochs = self.epochs or (3 if decoder else 5)
        steps_per_epoch = math.ceil(train_examples / batch)
        total = self.max_steps or steps_per_epoch * epochs
        # LoRA trains few weights and takes a larger step; tensor models are small.
        default_lr = 2e-3 if method is Method.LORA else (3e-4 if decoder else 1e-3)
        return Hyperparameters(
            epochs=epochs,
            batch_size=batch,
            learning_rate=self.learning_rate or default_lr,
            warmup_steps=self.warmup_steps
            if self.warmup_steps is not None
            else min(10, total // 10),
            weight_decay=self.weight_decay if self.weight_decay is not None else 0.0,
            max_seq_len=self.max_seq_len or 512,
            lora_rank=self.lora_rank or 8,
            lora_alpha=self.lora_alpha or 16.0,
            eval_every=self.eval_every or max(1, total // 5),
            checkpoint_every=self.checkpoint_every or max(1, total // 4),
            max_steps=self.max_steps or 0,
        )

    def total_steps(self, train_examples: int) -> int:
        assert self.batch_size and self.epochs
        return self.max_steps or math.ceil(train_examples / self.batch_size) * self.epochs


def resolve_method(method: Method, kind: ModelKind) -> Method:
    if method is Method.AUTO:
        return Method.LORA if kind is ModelKind.DECODER else Method.FULL
    if method is Method.LORA and kind is ModelKind.TENSOR:
        raise InvalidInput("method lora applies to decoder models; tensor models train with full")
    return method


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Checkpoint:
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: str = ""


@dataclass
class JobRecord:
    """One job, as stored in `<data-dir>/jobs/<id>/job.json`."""

    id: str
    model: str
    dataset: str
    method: Method = Method.AUTO
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    suffix: str = ""
    seed: int = 0
    aliases: list[str] = field(default_factory=list)
    workers: int = 1
    then_derive: str = ""
    gpus_per_worker: int = 0
    status: Status = Status.VALIDATING
    error_code: str = ""
    error_message: str = ""
    created_at: str = ""
    started_at: str = ""
    finished_at: str = ""
    base_version: str = ""
    kind: str = ""
    dataset_sha256: str = ""
    dataset_counts: dict[str, int] = field(default_factory=dict)
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    eta_seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    result_version: str = ""
    executor: str = "local"
    trained_tokens: int = 0
    restarts: int = 0
    # Changes at each (re)start; reports from an older attempt are refused.
    attempt: str = ""
    # The executor's name for the running worker group (pid, Kubernetes object).
    handle: str = ""
    # How far the service has read the workers' event file.
    events_offset: int = 0
    validation_fraction: float = 0.0
    cancel_requested: bool = False
    # Who created it: {"tenant", "subject", "method"} (empty without access control).
    requested_by: dict[str, str] = field(default_factory=dict)
    # then_derive: the registry's derive job, and its child ("model:version").
    derive_job: str = ""
    derived_version: str = ""

    @classmethod
    def new(cls, **values: Any) -> JobRecord:
        return cls(id=f"ftjob-{uuid.uuid4().hex[:12]}", created_at=utcnow().isoformat(), **values)

    def params(self) -> Hyperparameters:
        return Hyperparameters.from_json(self.hyperparameters)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["method"] = self.method.value
        data["status"] = self.status.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        values = dict(data)
        values["method"] = Method(values.get("method", "auto"))
        values["status"] = Status(values["status"])
        values["checkpoints"] = [Checkpoint(**c) for c in values.get("checkpoints", [])]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def copy(self) -> JobRecord:
        return replace(self, checkpoints=list(self.checkpoints))


@dataclass(frozen=True)
class JobRequest:
    """What CreateJob asks, transport-free (the servicer converts the message)."""

    model: str
    dataset: str
    method: Method = Method.AUTO
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    suffix: str = ""
    seed: int = 0
    aliases: tuple[str, ...] = ()
    workers: int = 1
    then_derive: str = ""
    gpus_per_worker: int = 0
    # The authenticated caller ({"tenant", "subject", "method"}), from the servicer.
    requested_by: dict[str, str] = field(default_factory=dict)
