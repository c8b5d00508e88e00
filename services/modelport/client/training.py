"""Synchronous Python API for the training service (`modelport finetune …` uses it).

with TrainingClient("localhost:8004") as training:
    job = training.create("tiny-lm@production", "support", aliases=["canary"])
    for event in training.events(job.id, follow=True):
        print(event.kind, event.metrics)
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import grpc

from modelport.client.channel import ModelportClientError, sync_channel
from modelport.proto.modelport.training.v1 import training_pb2 as pb
from modelport.proto.modelport.training.v1 import training_pb2_grpc

DEFAULT_TRAINING = "localhost:8004"
METHODS = {"auto": pb.METHOD_AUTO, "full": pb.METHOD_FULL, "lora": pb.METHOD_LORA}
TERMINAL = (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED)


def default_address() -> str:
    return os.environ.get("MODELPORT_TRAINING", "") or DEFAULT_TRAINING


def status_name(status: int) -> str:
    return str(pb.JobStatus.Name(pb.JobStatus.ValueType(status))).lower()


class TrainingClient:
    def __init__(
        self, address: str = "", *, timeout: float = 30.0, api_key: str | None = None
    ) -> None:
        """`api_key` (an API key or a bearer JWT) is sent on every call: the job's
        creator, whom its registered version names."""
        self.address = address or default_address()
        self.timeout = timeout
        self._channel = sync_channel(self.address, api_key=api_key)
        self.stub = training_pb2_grpc.TrainingStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TrainingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise ModelportClientError.from_rpc_error(exc) from None

    def create(
        self,
        model: str,
        dataset: str,
        *,
        method: str = "auto",
        hyperparameters: Mapping[str, float | int] | None = None,
        suffix: str = "",
        seed: int = 0,
        aliases: Iterable[str] = (),
        workers: int = 1,
        then_derive: str = "",
        gpus_per_worker: int = 0,
    ) -> pb.Job:
        request = pb.CreateJobRequest(
            model=model,
            dataset=dataset,
            method=METHODS[method],
            hyperparameters=pb.Hyperparameters(**(hyperparameters or {})),  # type: ignore[arg-type]
            suffix=suffix,
            seed=seed,
            aliases=list(aliases),
            workers=workers,
            then_derive=then_derive,
            gpus_per_worker=gpus_per_worker,
        )
        return self._call(self.stub.CreateJob, request)

    def get(self, job_id: str) -> pb.Job:
        return self._call(self.stub.GetJob, pb.GetJobRequest(id=job_id))

    def list(self, limit: int = 0) -> list[pb.Job]:
        return list(self._call(self.stub.ListJobs, pb.ListJobsRequest(limit=limit)).jobs)

    def cancel(self, job_id: str) -> pb.Job:
        return self._call(self.stub.CancelJob, pb.CancelJobRequest(id=job_id))

    def checkpoints(self, job_id: str) -> builtins.list[pb.Checkpoint]:
        request = pb.ListCheckpointsRequest(id=job_id)
        return list(self._call(self.stub.ListCheckpoints, request).checkpoints)

    def events(self, job_id: str, *, after: int = 0, follow: bool = False) -> Iterator[pb.JobEvent]:
        """Past events, then (with follow) live ones until the job ends."""
        stream = self.stub.WatchEvents(
            pb.WatchEventsRequest(id=job_id, after_seq=after, follow=follow)
        )
        try:
            yield from stream
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise ModelportClientError.from_rpc_error(exc) from None
        finally:
            stream.cancel()

    def wait(self, job_id: str, timeout: float = 600.0) -> pb.Job:
        """Follow the job's events until it ends; returns the final job."""
        for _ in self.events(job_id, follow=True):
            pass
        return self.get(job_id)
