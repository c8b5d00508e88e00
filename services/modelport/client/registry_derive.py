"""The registry's derive calls (mixed into `RegistryClient`): start, follow, and the worker's side.

with RegistryClient("localhost:8003") as registry:
    job = registry.derive_and_wait(
        "mlp@production", quantize="int8-dynamic", eval_data=Path("data.npz"),
        max_accuracy_drop=0.01, aliases=["canary"], on_progress=print)
    print(job.verdict, job.child_version, dict(job.metrics))
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc

from modelport.client.channel import ModelportClientError
from modelport.proto.modelport.registry.v1 import derive_pb2 as dpb
from modelport.proto.modelport.registry.v1 import registry_pb2 as pb

F = TypeVar("F", bound=Callable[..., Any])
ENDED = (dpb.DeriveJob.SUCCEEDED, dpb.DeriveJob.FAILED)


def maps_rpc_errors(method: F) -> F:
    """A failed call raises ModelportClientError (code + message), as the other clients do."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except grpc.RpcError as exc:
            raise ModelportClientError.from_rpc_error(exc) from None

    return wrapper  # type: ignore[return-value]


def eval_format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    raise ValueError(f"'{path}': evaluation data is an .npz or a .jsonl file")


class DeriveCalls:
    stub: Any
    timeout: float

    def watch(
        self, after_revision: int = 0, models: Iterable[str] = (), timeout: float | None = None
    ) -> Iterator[pb.WatchEvent]:
        raise NotImplementedError  # RegistryClient's

    @maps_rpc_errors
    def derive(
        self,
        source: str,
        *,
        quantize: str = "",
        dtype: str = "",
        prune: float = 0.0,
        prune_pattern: str = "",
        compile: str = "",
        eval_data: bytes | Path | str | None = None,
        eval_format: str = "",
        metric: str = "",
        max_accuracy_drop: float | None = None,
        relative_drop: bool = False,
        aliases: Iterable[str] = (),
        force: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> dpb.DeriveJob:
        """Start a derive job in the registry; returns it QUEUED (see `derive_and_wait`)."""
        data = b""
        if isinstance(eval_data, (str, Path)):
            path = Path(eval_data)
            eval_format = eval_format or eval_format_of(path)
            data = path.read_bytes()
        elif eval_data:
            data = eval_data
        request = dpb.DeriveRequest(
            source=source,
            spec=dpb.DeriveSpec(
                prune=prune,
                prune_pattern=prune_pattern,
                dtype=dtype,
                quantize=quantize,
                compile=compile,
            ),
            eval_data=data,
            eval_format=eval_format,
            metric=metric,
            relative_drop=relative_drop,
            aliases=list(aliases),
            force=force,
            labels=labels or {},
        )
        if max_accuracy_drop is not None:
            request.max_accuracy_drop = max_accuracy_drop
        return self.stub.DeriveVersion(request, timeout=max(self.timeout, 120.0))

    @maps_rpc_errors
    def get_derive_job(self, job_id: str) -> dpb.DeriveJob:
        return self.stub.GetDeriveJob(dpb.GetDeriveJobRequest(id=job_id), timeout=self.timeout)

    @maps_rpc_errors
    def list_derive_jobs(self, model: str = "") -> list[dpb.DeriveJob]:
        request = dpb.ListDeriveJobsRequest(model=model)
        return list(self.stub.ListDeriveJobs(request, timeout=self.timeout).jobs)

    @maps_rpc_errors
    def current_revision(self) -> int:
        return int(self.stub.ListModels(pb.ListModelsRequest(), timeout=self.timeout).revision)

    def wait_for_derive_job(
        self,
        job: dpb.DeriveJob,
        after_revision: int,
        on_progress: Callable[[pb.WatchEvent], None] | None = None,
        timeout: float | None = None,
    ) -> dpb.DeriveJob:
        """Follow the job's DERIVE_* events on Watch (from `after_revision`) until it ends."""
        if job.state in ENDED:
            return job
        events = self.watch(after_revision, models=[job.model], timeout=timeout)
        try:
            for event in events:
                if event.job != job.id:
                    continue
                if on_progress is not None:
                    on_progress(event)
                if event.kind == pb.WatchEvent.DERIVE_FINISHED:
                    break
        finally:
            events.close()  # type: ignore[attr-defined]
        return self.get_derive_job(job.id)

    def derive_and_wait(
        self,
        source: str,
        *,
        on_progress: Callable[[pb.WatchEvent], None] | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> dpb.DeriveJob:
        """`derive`, then wait for the job to end; returns its final state."""
        revision = self.current_revision()  # before the job exists: no event is missed
        job = self.derive(source, **options)
        return self.wait_for_derive_job(job, revision, on_progress, timeout)

    # -- the worker's side --------------------------------------------------

    @maps_rpc_errors
    def derive_work(self, job_id: str, token: str) -> dpb.DeriveWork:
        request = dpb.DeriveWorkRequest(id=job_id, token=token)
        return self.stub.GetDeriveWork(request, timeout=max(self.timeout, 120.0))

    @maps_rpc_errors
    def report_derive_progress(
        self,
        job_id: str,
        token: str,
        stage: str,
        progress: float,
        message: str = "",
        *,
        failed: bool = False,
    ) -> dpb.DeriveJob:
        request = dpb.DeriveProgress(
            id=job_id, token=token, stage=stage, progress=progress, message=message, failed=failed
        )
        return self.stub.ReportDeriveProgress(request, timeout=self.timeout)
