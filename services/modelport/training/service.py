"""The training core: jobs from creation to a registered version (no gRPC here).

create → VALIDATING (preparation: fetch, check, resolve) → QUEUED → RUNNING
(an executor runs the workers; their events come in through `ingest`) →
registration → SUCCEEDED; or FAILED with a code and a reason; or CANCELLED
(workers stopped, nothing registered). Every change is saved to the job
store before it is announced, and a restarted service picks its jobs up: a
job whose workers were running locally restarts them, and they resume from
the newest checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from modelport.artifacts.refs import Ref, check_alias_name
from modelport.errors import Internal, InvalidInput, ModelportError
from modelport.training import derivation, registration
from modelport.training.executors import Executor, log_tail
from modelport.training.jobs import JobRecord, JobRequest, Status, utcnow
from modelport.training.preparation import prepare
from modelport.training.store import JobStore
from modelport.training.worker import WorkerSpec
from modelport.training.worker_events import apply_event, read_new

log = logging.getLogger(__name__)

MAX_WORKERS = 64


class TrainingService:
    def __init__(
        self,
        data_dir: Path,
        registry: str,
        executor: Executor,
        *,
        max_concurrent_jobs: int = 1,
        poll_seconds: float = 0.2,
        worker_threads: int = 0,
    ) -> None:
        self.store = JobStore(data_dir)
        self.worker_threads = worker_threads
        self.registry = registry
        self.executor = executor
        self.max_concurrent_jobs = max_concurrent_jobs
        self.poll_seconds = poll_seconds
        self.jobs: dict[str, JobRecord] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        # Jobs whose status turned terminal but whose terminal status event is not stored yet:
        # a follower must not end in between, or it misses the event.
        self._ending: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        for job in await asyncio.to_thread(self.store.load_all):
            self.jobs[job.id] = job
            if job.status is Status.VALIDATING:
                self._spawn(self._prepare(job))
            elif job.status is Status.RUNNING:
                # Workers of a previous service process: stopped, then rerun from the checkpoint.
                await asyncio.to_thread(self.executor.stop, job, job.handle)
                job.restarts += 1
                await self._set_status(
                    job, Status.QUEUED, "service restarted: resuming from the newest checkpoint"
                )
        self._schedule()

    async def stop(self) -> None:
        """Stop the workers too: a restarted service resumes them from their checkpoint."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for job_id in list(self._running):
            job = self.jobs[job_id]
            await asyncio.to_thread(self.executor.stop, job, job.handle)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the API -----------------------------------------------------------------

    async def create(self, request: JobRequest) -> JobRecord:
        Ref.parse(request.model)
        if not request.dataset:
            raise InvalidInput("a dataset reference is required (see `modelport datasets push`)")
        request.hyperparameters.check()
        for alias in request.aliases:
            check_alias_name(Ref.parse(request.model).model, alias)
        if not 1 <= request.workers <= MAX_WORKERS:
            raise InvalidInput(f"workers={request.workers}: must be between 1 and {MAX_WORKERS}")
        if request.then_derive:
            derivation.check(request.then_derive)
        job = JobRecord.new(
            model=request.model,
            dataset=request.dataset,
            method=request.method,
            hyperparameters=request.hyperparameters.to_json(),
            suffix=request.suffix,
            seed=request.seed or int.from_bytes(uuid.uuid4().bytes[:3], "big"),
            aliases=list(request.aliases),
            workers=request.workers,
            then_derive=request.then_derive,
            gpus_per_worker=request.gpus_per_worker,
            executor=self.executor.name,
            requested_by=dict(request.requested_by),
        )
        self.jobs[job.id] = job
        await self._set_status(
            job, Status.VALIDATING, f"job created for {job.model} on {job.dataset}"
        )
        self._spawn(self._prepare(job))
        return job.copy()

    def get(self, job_id: str) -> JobRecord:
        job = self.jobs.get(job_id)
        if job is None:
            self.store.load(job_id)  # NotFound with the message callers expect
            raise Internal(f"job '{job_id}' is on disk but not loaded")
        return job.copy()

    def owner_of(self, job_id: str) -> tuple[str, str] | None:
        """(base model, tenant that created it) of a job, for access control; None when
        there is no such job."""
        job = self.jobs.get(job_id)
        if job is None:
            return None
        return Ref.parse(job.model).model, job.requested_by.get("tenant", "")

    def list_jobs(self, statuses: set[Status] | None = None, limit: int = 0) -> list[JobRecord]:
        jobs = sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)
        if statuses:
            jobs = [j for j in jobs if j.status in statuses]
        return [j.copy() for j in (jobs[:limit] if limit > 0 else jobs)]

    async def cancel(self, job_id: str) -> JobRecord:
        job = self.jobs.get(job_id) or self.get(job_id)
        if job.status.terminal:
            return job.copy()
        job.cancel_requested = True
        if job.status is Status.RUNNING:
            await asyncio.to_thread(self.executor.stop, job, job.handle)
        await self._set_status(
            job,
            Status.CANCELLED,
            f"cancelled after registering {job.result_version} (a derive job already "
            "started runs on in the registry)"
            if job.result_version
            else "cancelled: workers stopped, nothing registered",
        )
        return job.copy()

    async def events(
        self, job_id: str, after: int = 0, follow: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        self.get(job_id)
        wakeup = self._wakeups.setdefault(job_id, asyncio.Event())
        while True:
            wakeup.clear()
            batch = await asyncio.to_thread(self.store.events_after, job_id, after)
            for event in batch:
                yield event
                after = event["seq"]
            ended = self.jobs[job_id].status.terminal and job_id not in self._ending
            if not follow or (ended and not batch):
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wakeup.wait(), 1.0)

    async def report(self, job_id: str, attempt: str, events: list[dict[str, Any]]) -> bool:
        """Events from workers elsewhere; False tells them to stop."""
        job = self.jobs.get(job_id) or self.get(job_id)
        if job.status is not Status.RUNNING or attempt != job.attempt:
            return False
        for event in events:
            await self._ingest(job, event)
        return not job.cancel_requested

    # -- phases ------------------------------------------------------------------

    async def _prepare(self, job: JobRecord) -> None:
        job_dir = self.store.job_dir(job.id)
        try:
            prepared = await asyncio.to_thread(prepare, self.registry, job, job_dir)
        except ModelportError as error:
            if not job.status.terminal:
                await self._fail(job, error.code, str(error))
            return
        except Exception as error:
            log.exception("preparing %s failed", job.id)
            if not job.status.terminal:
                await self._fail(
                    job,
                    "INTERNAL",
                    f"validation failed unexpectedly ({type(error).__name__}: {error})",
                )
            return
        if job.status.terminal:  # cancelled meanwhile
            return
        job.base_version = prepared.base_version
        job.kind = prepared.kind.value
        job.method = prepared.method
        job.hyperparameters = prepared.params.to_json()
        job.dataset_sha256 = prepared.dataset_sha256
        job.validation_fraction = prepared.validation_fraction
        job.dataset_counts = prepared.counts
        job.total_steps = prepared.params.total_steps(prepared.counts["train_examples"])
        await self._set_status(
            job,
            Status.QUEUED,
            f"validated: {prepared.counts['train_examples']} training examples, "
            f"method {job.method.value}, {job.total_steps} steps",
        )
        self._schedule()

    def _schedule(self) -> None:
        queued = sorted(
            (
                j
                for j in self.jobs.values()
                if j.status is Status.QUEUED and j.id not in self._running
            ),
            key=lambda j: j.created_at,
        )
        for job in queued:
            if len(self._running) >= self.max_concurrent_jobs:
                return
            self._running.add(job.id)
            self._spawn(self._supervise(job))

    def _spec(self, job: JobRecord, job_dir: Path) -> WorkerSpec:
        spec = WorkerSpec(
            job_id=job.id,
            kind=job.kind,
            method=job.method.value,
            hyperparameters=job.hyperparameters,
            seed=job.seed,
            validation_fraction=job.validation_fraction,
            work_dir=str(job_dir),
            attempt=job.attempt,
            threads=self.worker_threads,
        )
        if self.executor.reports_over_grpc:
            spec.registry, spec.base_ref = self.registry, job.base_version
            spec.dataset_ref = f"{job.dataset.split(':')[0]}:{job.dataset_sha256}"
            spec.extra["register"] = registration.arguments(job)
        else:
            spec.base_model_dir, spec.dataset_path = str(job_dir / "base"), str(job_dir / "dataset")
        return spec

    async def _supervise(self, job: JobRecord) -> None:
        job_dir = self.store.job_dir(job.id)
        try:
            job.attempt = uuid.uuid4().hex
            job.started_at = job.started_at or utcnow().isoformat()
            spec_path = job_dir / "spec.json"
            spec = self._spec(job, job_dir)
            spec.write(spec_path)
            (job_dir / "failed.json").unlink(missing_ok=True)
            job.error_code = job.error_message = ""
            job.handle = await asyncio.to_thread(self.executor.start, job, spec_path, job_dir)
            await self._set_status(
                job, Status.RUNNING, f"{job.workers} worker(s) started ({self.executor.name})"
            )
            while True:
                await self._pull_worker_events(job, job_dir)
                outcome = await asyncio.to_thread(self.executor.poll, job, job.handle)
                if outcome is not None:
                    break
                if job.status.terminal:
                    return
                await asyncio.sleep(self.poll_seconds)
            await self._pull_worker_events(job, job_dir)
            await self._finish(job, job_dir, outcome.exit_code, outcome.detail)
        finally:
            self._running.discard(job.id)
            self._schedule()

    async def _finish(self, job: JobRecord, job_dir: Path, exit_code: int, detail: str) -> None:
        if job.status.terminal or job.cancel_requested:
            return
        failed = job_dir / "failed.json"
        if failed.is_file():
            reason = json.loads(failed.read_text())
            await self._fail(job, reason.get("code", "INVALID_ARGUMENT"), reason.get("message", ""))
            return
        if job.error_code:
            await self._fail(job, job.error_code, job.error_message)
            return
        if exit_code != 0 or (not (job_dir / "output").is_dir() and not job.result_version):
            await self._fail(
                job,
                "INTERNAL",
                f"workers exited with code {exit_code} after {job.restarts} restart(s)"
                f"{': ' + detail if detail else ''}; "
                f"last lines of worker.log: {log_tail(job_dir / 'worker.log')}",
            )
            return
        if not job.result_version:
            try:
                job.result_version = await asyncio.to_thread(
                    registration.register,
                    self.registry,
                    job_dir / "output",
                    metrics={k: v for k, v in job.metrics.items() if k != "learning_rate"},
                    **registration.arguments(job),
                )
            except ModelportError as error:
                await self._fail(job, error.code, str(error))
                return
        message = f"registered {job.result_version}"
        if job.then_derive:  # a derive that fails leaves the fine-tune registered
            message += "; " + await derivation.run(
                self.registry,
                job,
                say=lambda text: self._say(job, text),
                save=lambda: asyncio.to_thread(self.store.save, job),
                poll_seconds=max(self.poll_seconds, 0.5),
            )
        if not job.status.terminal:
            await self._set_status(job, Status.SUCCEEDED, message)

    async def _pull_worker_events(self, job: JobRecord, job_dir: Path) -> None:
        if self.executor.reports_over_grpc:
            return
        events, job.events_offset = await asyncio.to_thread(
            read_new, job_dir / "worker-events.jsonl", job.events_offset
        )
        for event in events:
            await self._ingest(job, event)

    async def _ingest(self, job: JobRecord, event: dict[str, Any]) -> None:
        record = apply_event(job, event)
        # Progress is saved every 10 steps (and at the last): a restart repeats little.
        if event.get("kind") != "progress" or job.step == job.total_steps or job.step % 10 == 0:
            await asyncio.to_thread(self.store.save, job)
        await self._record(job, record)

    async def _fail(self, job: JobRecord, code: str, message: str) -> None:
        job.error_code, job.error_message = code, message
        await self._set_status(job, Status.FAILED, message)

    async def _set_status(self, job: JobRecord, status: Status, message: str) -> None:
        job.status = status
        if status.terminal:
            self._ending.add(job.id)
            job.finished_at = utcnow().isoformat()
            job.eta_seconds = 0.0
        try:
            await asyncio.to_thread(self.store.save, job)
            event: dict[str, Any] = {
                "kind": "status",
                "at": time.time(),
                "status": status.value,
                "message": message,
            }
            if status is Status.FAILED:
                event.update(error_code=job.error_code, error_message=job.error_message)
            if status is Status.SUCCEEDED:
                event["result_version"] = job.result_version
            await self._record(job, event)
        finally:
            self._ending.discard(job.id)
            self._wakeups.setdefault(job.id, asyncio.Event()).set()
        log.info("job %s: %s (%s)", job.id, status.value, message)

    async def _say(self, job: JobRecord, message: str) -> None:
        await self._record(job, {"kind": "log", "at": time.time(), "message": message})

    async def _record(self, job: JobRecord, event: dict[str, Any]) -> None:
        await asyncio.to_thread(self.store.append_event, job.id, event)
        self._wakeups.setdefault(job.id, asyncio.Event()).set()
