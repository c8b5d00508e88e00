"""Derive jobs in the registry: created by DeriveVersion, run by a worker, ended by its upload.

A job is a row holding the caller's request and evaluation data. The worker
that runs it (a local process or a Kubernetes Job) holds a random token whose
sha256 the row keeps: only it may read the data, report progress and upload
the child. Every report is a DERIVE_PROGRESS event on Watch. The child's
upload ends the job in the same transaction that stores the version: the
gate (`max_accuracy_drop` on the metrics the worker measured) decides the
version's status, and the aliases move only if it passed (or with force).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, select

from modelport.artifacts.refs import check_alias_name
from modelport.errors import FailedPrecondition, InvalidInput, NotFound, PermissionDenied
from modelport.registry import tables as t
from modelport.registry.records import EventKind, Resolved, VersionStatus
from modelport.registry.transactions import Tx, Writer, as_utc, utcnow

MAX_EVAL_BYTES = 48 * 1024 * 1024
EVAL_FORMATS = ("npz", "jsonl")


class JobState:
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ENDED = (SUCCEEDED, FAILED)


@dataclass(frozen=True)
class DeriveJobRequest:
    source: str
    spec: dict[str, Any]
    eval_data: bytes = b""
    eval_format: str = ""
    metric: str = ""
    max_accuracy_drop: float | None = None
    relative_drop: bool = False
    aliases: tuple[str, ...] = ()
    force: bool = False
    labels: dict[str, str] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """What the row keeps (everything but the data)."""
        return {
            "spec": dict(self.spec),
            "eval_format": self.eval_format,
            "metric": self.metric,
            "max_accuracy_drop": self.max_accuracy_drop,
            "relative_drop": self.relative_drop,
            "aliases": list(self.aliases),
            "force": self.force,
            "labels": dict(self.labels),
        }


@dataclass(frozen=True)
class DeriveJobInfo:
    id: str
    model: str
    parent_version: int
    request: dict[str, Any]
    state: str
    stage: str
    progress: float
    message: str
    child_version: int
    verdict: str
    metrics: dict[str, float]
    executor: str
    created_at: datetime
    updated_at: datetime

    @property
    def parent(self) -> str:
        return f"{self.model}:{self.parent_version}"

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.request.get("spec", {}))


def _info(row: Row[Any]) -> DeriveJobInfo:
    return DeriveJobInfo(
        id=row.id,
        model=row.model,
        parent_version=int(row.parent_version),
        request=dict(row.request),
        state=row.state,
        stage=row.stage,
        progress=float(row.progress),
        message=row.message,
        child_version=int(row.child_version),
        verdict=row.verdict,
        metrics={k: float(v) for k, v in (row.metrics or {}).items()},
        executor=row.executor,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def accuracy_verdict(settings: dict[str, Any], metrics: dict[str, float]) -> tuple[str, str]:
    """(status, why) for a child whose worker measured `metrics`."""
    limit = settings.get("max_accuracy_drop")
    if limit is None:
        return VersionStatus.NONE, "no gate set"
    drop = metrics.get("accuracy_drop")
    if drop is None or math.isnan(drop):
        return VersionStatus.REJECTED, "no accuracy was measured, so the gate cannot pass"
    if settings.get("relative_drop"):
        parent = abs(metrics.get("parent.accuracy", 0.0))
        drop = drop / parent if parent else (math.inf if drop > 0 else 0.0)
        shown = f"relative drop {drop:.4%} (limit {limit:.4%})"
    else:
        shown = f"drop {drop:.6g} (limit {limit:.6g})"
    if drop <= limit:
        return VersionStatus.ACCEPTED, f"accepted: {shown}"
    return VersionStatus.REJECTED, f"rejected: {shown}"


class DeriveJobs:
    def __init__(self, engine: Engine, writer: Writer) -> None:
        self.engine = engine
        self.writer = writer

    def _row(self, conn: Any, job_id: str) -> Row[Any]:
        row = conn.execute(select(t.derive_jobs).where(t.derive_jobs.c.id == job_id)).first()
        if row is None:
            raise NotFound(f"derive job '{job_id}' does not exist")
        return row

    def _worker_row(self, conn: Any, job_id: str, token: str) -> Row[Any]:
        row = self._row(conn, job_id)
        if not token or not hmac.compare_digest(row.token_sha256, _digest(token)):
            raise PermissionDenied(f"derive job '{job_id}': wrong worker token")
        if row.state in JobState.ENDED:
            raise FailedPrecondition(f"derive job '{job_id}' has ended ({row.state})")
        return row

    def check_request(self, request: DeriveJobRequest, model: str) -> None:
        if request.eval_format and request.eval_format not in EVAL_FORMATS:
            raise InvalidInput(
                f"derive: eval_format '{request.eval_format}' is not one of npz, jsonl"
            )
        if request.eval_data and not request.eval_format:
            raise InvalidInput("derive: eval_data needs its eval_format (npz or jsonl)")
        if len(request.eval_data) > MAX_EVAL_BYTES:
            raise InvalidInput(
                f"derive: evaluation data is {len(request.eval_data)} bytes; the limit is "
                f"{MAX_EVAL_BYTES} (sample it down)"
            )
        if request.max_accuracy_drop is not None:
            if request.max_accuracy_drop < 0 or math.isnan(request.max_accuracy_drop):
                raise InvalidInput("derive: max_accuracy_drop must be 0 or more")
            if not request.eval_data:
                raise InvalidInput("derive: a gate (max_accuracy_drop) needs evaluation data")
        for alias in request.aliases:
            check_alias_name(model, alias)

    def create(
        self, request: DeriveJobRequest, parent: Resolved, executor: str
    ) -> tuple[DeriveJobInfo, str]:
        """A QUEUED job for `parent`; returns it and the worker's token (never stored)."""
        self.check_request(request, parent.model)
        job_id = uuid.uuid4().hex
        token = secrets.token_urlsafe(32)
        now = utcnow()
        with self.writer.write() as tx:
            tx.conn.execute(
                t.derive_jobs.insert().values(
                    id=job_id,
                    token_sha256=_digest(token),
                    model=parent.model,
                    parent_version=parent.version,
                    request=request.settings(),
                    eval_data=request.eval_data or None,
                    state=JobState.QUEUED,
                    stage="queued",
                    progress=0.0,
                    message="",
                    child_version=0,
                    verdict="",
                    metrics={},
                    executor=executor,
                    created_at=now,
                    updated_at=now,
                )
            )
            self._emit(tx, parent.model, job_id, "queued", 0.0, "")
        return self.get(job_id), token

    def _emit(
        self, tx: Tx, model: str, job_id: str, stage: str, progress: float, message: str
    ) -> None:
        detail = {"stage": stage, "progress": progress, "message": message}
        tx.emit(EventKind.DERIVE_PROGRESS, model, job=job_id, detail=detail)

    def get(self, job_id: str) -> DeriveJobInfo:
        with self.engine.connect() as conn:
            return _info(self._row(conn, job_id))

    def list(self, model: str = "") -> list[DeriveJobInfo]:
        query = select(t.derive_jobs).order_by(t.derive_jobs.c.created_at)
        if model:
            query = query.where(t.derive_jobs.c.model == model)
        with self.engine.connect() as conn:
            return [_info(row) for row in conn.execute(query).all()]

    def work(self, job_id: str, token: str) -> tuple[DeriveJobInfo, bytes]:
        """The worker starts: the job turns RUNNING; returns it with its data."""
        with self.writer.write() as tx:
            row = self._worker_row(tx.conn, job_id, token)
            if row.state == JobState.QUEUED:
                tx.conn.execute(
                    t.derive_jobs.update()
                    .where(t.derive_jobs.c.id == job_id)
                    .values(state=JobState.RUNNING, stage="started", updated_at=utcnow())
                )
                self._emit(tx, row.model, job_id, "started", 0.0, "")
            data = bytes(row.eval_data or b"")
        return self.get(job_id), data

    def report(
        self, job_id: str, token: str, stage: str, progress: float, message: str, failed: bool
    ) -> DeriveJobInfo:
        with self.writer.write() as tx:
            row = self._worker_row(tx.conn, job_id, token)
            self._update(tx, row, stage, progress, message, failed)
        return self.get(job_id)

    def fail(self, job_id: str, message: str) -> None:
        """The executor saw the worker end without finishing the job."""
        with self.writer.write() as tx:
            row = self._row(tx.conn, job_id)
            if row.state not in JobState.ENDED:
                self._update(tx, row, "failed", row.progress, message, True)

    def _update(
        self, tx: Tx, row: Row[Any], stage: str, progress: float, message: str, failed: bool
    ) -> None:
        progress = min(max(float(progress), 0.0), 1.0)
        values: dict[str, Any] = {
            "stage": stage[:64],
            "progress": progress,
            "message": message,
            "updated_at": utcnow(),
        }
        if failed:
            values |= {"state": JobState.FAILED, "eval_data": None}
        tx.conn.execute(t.derive_jobs.update().where(t.derive_jobs.c.id == row.id).values(**values))
        if failed:
            tx.emit(
                EventKind.DERIVE_FINISHED,
                row.model,
                job=row.id,
                detail={"stage": "failed", "progress": progress, "message": message},
            )
        else:
            self._emit(tx, row.model, row.id, stage[:64], progress, message)

    # -- the child's upload --------------------------------------------------

    def check_upload(self, job_id: str, token: str, model: str) -> DeriveJobInfo:
        with self.engine.connect() as conn:
            row = self._worker_row(conn, job_id, token)
        if row.model != model:
            raise InvalidInput(f"derive job '{job_id}' derives model '{row.model}', not '{model}'")
        return _info(row)

    def finish(
        self, tx: Tx, job: DeriveJobInfo, token: str, version: int, metrics: dict[str, float]
    ) -> tuple[str, tuple[str, ...]]:
        """Inside the upload's transaction: end the job; returns (status, aliases to move)."""
        row = self._worker_row(tx.conn, job.id, token)  # not ended meanwhile
        settings = dict(row.request)
        status, why = accuracy_verdict(settings, metrics)
        aliases: tuple[str, ...] = tuple(settings.get("aliases", ()))
        if status == VersionStatus.REJECTED and not settings.get("force"):
            if aliases:
                why += f"; aliases {', '.join(aliases)} not moved (force to move them)"
            aliases = ()
        message = f"{job.model}:{version} {why}"
        tx.conn.execute(
            t.derive_jobs.update()
            .where(t.derive_jobs.c.id == job.id)
            .values(
                state=JobState.SUCCEEDED,
                stage="done",
                progress=1.0,
                message=message,
                child_version=version,
                verdict=status,
                metrics={k: float(v) for k, v in metrics.items()},
                eval_data=None,
                updated_at=utcnow(),
            )
        )
        tx.emit(
            EventKind.DERIVE_FINISHED,
            job.model,
            version=version,
            job=job.id,
            detail={"stage": "done", "progress": 1.0, "message": message},
        )
        return status, aliases
