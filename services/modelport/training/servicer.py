"""`modelport.training.v1.Training` over the transport-free `TrainingService`."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc

from modelport.common.access import current_principal
from modelport.proto.modelport.training.v1 import training_pb2 as pb
from modelport.proto.modelport.training.v1 import training_pb2_grpc
from modelport.training import convert
from modelport.training.service import TrainingService

Context = grpc.aio.ServicerContext


class TrainingServicer(training_pb2_grpc.TrainingServicer):
    def __init__(self, service: TrainingService) -> None:
        self.service = service

    async def CreateJob(self, request: pb.CreateJobRequest, context: Context) -> pb.Job:
        request_ = convert.request_from_msg(request)
        principal = current_principal.get()
        if principal is not None and principal.tenant:
            # The job registers (and derives) for this caller: its lineage and the
            # registry's audit events name them.
            request_ = dataclasses.replace(
                request_,
                requested_by={
                    "tenant": principal.tenant,
                    "subject": principal.subject,
                    "method": principal.method,
                },
            )
        return convert.job_msg(await self.service.create(request_))

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        return convert.job_msg(self.service.get(request.id))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        statuses = {
            convert.STATUSES_BACK[s] for s in request.statuses if s in convert.STATUSES_BACK
        }
        jobs = self.service.list_jobs(statuses, request.limit)
        return pb.ListJobsResponse(jobs=[convert.job_msg(j) for j in jobs])

    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> pb.Job:
        return convert.job_msg(await self.service.cancel(request.id))

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: Context
    ) -> AsyncIterator[pb.JobEvent]:
        async for event in self.service.events(request.id, request.after_seq, request.follow):
            yield convert.event_msg(request.id, event)

    async def ListCheckpoints(
        self, request: pb.ListCheckpointsRequest, context: Context
    ) -> pb.ListCheckpointsResponse:
        job = convert.job_msg(self.service.get(request.id))
        return pb.ListCheckpointsResponse(checkpoints=job.checkpoints)

    async def ReportEvents(
        self, request: pb.ReportEventsRequest, context: Context
    ) -> pb.ReportEventsResponse:
        keep = await self.service.report(
            request.id, request.attempt, convert.reported_events(request)
        )
        return pb.ReportEventsResponse(keep_running=keep)


def register(server: grpc.aio.Server, servicer: TrainingServicer) -> None:
    training_pb2_grpc.add_TrainingServicer_to_server(servicer, server)


SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Training"].full_name
