"""The derive RPCs of `ModelRegistry` (mixed into `RegistryServicer`): thin, over `DeriveJobs`."""

from __future__ import annotations

import asyncio

import grpc

from modelport.compression.spec import DeriveSpec
from modelport.errors import Unavailable
from modelport.proto.modelport.registry.v1 import derive_pb2 as dpb
from modelport.registry import convert
from modelport.registry.derive_executor import DeriveExecutor
from modelport.registry.store import RegistryStore

Context = grpc.aio.ServicerContext


class DeriveRpcs:
    store: RegistryStore
    executor: DeriveExecutor | None = None

    async def DeriveVersion(self, request: dpb.DeriveRequest, context: Context) -> dpb.DeriveJob:
        job_request = convert.derive_request(request)
        spec = DeriveSpec.from_json(job_request.spec)
        spec.check()  # a bad spec is refused here, not in a worker minutes later
        executor = self.executor
        if executor is None:
            raise Unavailable("this registry runs no derive jobs (--derive-executor none)")
        parent = await asyncio.to_thread(self.store.resolve, request.source)
        job, token = await asyncio.to_thread(
            self.store.jobs.create, job_request, parent, executor.name
        )
        executor.submit(job, token, spec.needs_gpu())
        return convert.job_msg(job)

    async def GetDeriveJob(
        self, request: dpb.GetDeriveJobRequest, context: Context
    ) -> dpb.DeriveJob:
        return convert.job_msg(await asyncio.to_thread(self.store.jobs.get, request.id))

    async def ListDeriveJobs(
        self, request: dpb.ListDeriveJobsRequest, context: Context
    ) -> dpb.ListDeriveJobsResponse:
        jobs = await asyncio.to_thread(self.store.jobs.list, request.model)
        return dpb.ListDeriveJobsResponse(jobs=[convert.job_msg(j) for j in jobs])

    async def GetDeriveWork(
        self, request: dpb.DeriveWorkRequest, context: Context
    ) -> dpb.DeriveWork:
        job, data = await asyncio.to_thread(self.store.jobs.work, request.id, request.token)
        return dpb.DeriveWork(job=convert.job_msg(job), eval_data=data)

    async def ReportDeriveProgress(
        self, request: dpb.DeriveProgress, context: Context
    ) -> dpb.DeriveJob:
        job = await asyncio.to_thread(
            self.store.jobs.report,
            request.id,
            request.token,
            request.stage,
            request.progress,
            request.message,
            request.failed,
        )
        return convert.job_msg(job)
