"""GRPCInferenceService: maps OIP messages to the inference cores and back.

Thin on purpose: answering requests lives in `serving` (decode, batch,
encode), model control, statistics and shared memory regions across sibling
workers in `fleet`, lifecycle in `model_manager`. Errors become statuses in
the error boundary every method is registered behind (`common.grpc_errors`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

from modelport import __version__, errors
from modelport.common import generative_load, tracing
from modelport.inference.cuda_shared_memory import CudaSharedMemory
from modelport.inference.fleet import ModelControl
from modelport.inference.model_manager import ModelManager
from modelport.inference.peers import from_peer
from modelport.inference.serving import DataPlane
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext

EXTENSIONS = ["classification", "sequence", "sequence(string_id)", "model_repository",
              "model_configuration", "system_shared_memory", "binary_tensor_data",
              "parameters", "statistics"]  # fmt: skip
NOT_OFFERED = (
    "not supported by modelport: trace and log settings are not offered "
    "(use --log-level and --otlp-endpoint)"
)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, manager: ModelManager, control: ModelControl, serving: DataPlane) -> None:
        self._manager = manager
        self._control = control
        self._serving = serving
        self._cuda = CudaSharedMemory()

    # -- health and metadata --------------------------------------------------------

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._manager.serving)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._manager.is_ready(request.name, request.version))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="modelport", version=__version__, extensions=EXTENSIONS
        )

    def _resident(
        self, name: str, version: str, context: Context
    ) -> AbstractAsyncContextManager[None]:
        """On a pool replica, a model asked about is loaded as a request would load it
        (a caller asks for metadata just before its first request)."""
        pool = self._serving.pool
        if pool is None:
            return contextlib.nullcontext()
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        return pool.use(name, version, deadline)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        async with self._resident(request.name, request.version, context):
            return self._metadata(request)

    def _metadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        served = self._manager.get(request.name, request.version)
        entry = self._manager.entry(request.name)
        spec = served.spec
        batch = [-1] if spec.max_batch_size > 0 else []
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=spec.name,
            versions=[str(v) for v in sorted(entry.versions)],
            platform=spec.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype.name, shape=[*batch, *t.dims])
                    for t in spec.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype.name, shape=[*batch, *t.dims])
                     for t in spec.outputs],
        )  # fmt: skip

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        async with self._resident(request.name, request.version, context):
            served = self._manager.get(request.name, request.version)
            return pb.ModelConfigResponse(config=served.spec.config)

    # -- inference ------------------------------------------------------------------

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        with tracing.server_span("ModelInfer", context, model=request.model_name):
            return await self._serving.infer(
                request, context.time_remaining(), local=from_peer(context)
            )

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        # How busy the generative engines are, for the router's stream balancing: in
        # the initial metadata (sent with the first answer, this request admitted) and
        # in the trailing metadata (when the call ends).
        first = True
        async for answer in self._serving.stream(request_iterator, context.time_remaining()):
            if first:
                first = False
                loads = self._manager.generative_loads()
                if loads:
                    await context.send_initial_metadata(generative_load.to_metadata(loads))
            yield answer
        loads = self._manager.generative_loads()
        if loads:
            context.set_trailing_metadata(generative_load.to_metadata(loads))

    # -- statistics and repository --------------------------------------------------

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        stats = await self._control.statistics(
            request.name, request.version, fan_out=not from_peer(context)
        )
        return pb.ModelStatisticsResponse(model_stats=stats)

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        index = pb.RepositoryIndexResponse.ModelIndex
        entries = self._control.index(request.repository_name, request.ready)
        return pb.RepositoryIndexResponse(
            models=[index(name=e.name, version=e.version, state=e.state, reason=e.reason)
                    for e in entries]
        )  # fmt: skip

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        parameters = {k: _parameter_value(v) for k, v in request.parameters.items()}
        await self._control.load(
            request.repository_name, request.model_name, parameters,
            fan_out=not from_peer(context),
        )  # fmt: skip
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        await self._control.unload(
            request.repository_name, request.model_name, fan_out=not from_peer(context)
        )
        return pb.RepositoryModelUnloadResponse()

    # -- shared memory ----------------------------------------------------------------

    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: Context
    ) -> pb.SystemSharedMemoryStatusResponse:
        response = pb.SystemSharedMemoryStatusResponse()
        for region in self._control.regions(request.name):
            response.regions[region.name].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(
                    name=region.name,
                    key=region.key,
                    offset=region.offset,
                    byte_size=region.byte_size,
                )
            )
        return response

    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: Context
    ) -> pb.SystemSharedMemoryRegisterResponse:
        await self._control.register_region(
            request.name, request.key, request.offset, request.byte_size,
            fan_out=not from_peer(context),
        )  # fmt: skip
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: Context
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        await self._control.unregister_region(request.name, fan_out=not from_peer(context))
        return pb.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, context: Context
    ) -> pb.CudaSharedMemoryStatusResponse:
        self._cuda.status(request.name)
        return pb.CudaSharedMemoryStatusResponse()

    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest, context: Context
    ) -> pb.CudaSharedMemoryRegisterResponse:
        self._cuda.register(request.name)
        return pb.CudaSharedMemoryRegisterResponse()

    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context: Context
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        self._cuda.unregister(request.name)
        return pb.CudaSharedMemoryUnregisterResponse()

    # -- declared by the protocol, not offered ------------------------------------

    async def _not_offered(self, request: Any, context: Any) -> Any:
        raise errors.Unimplemented(NOT_OFFERED)

    TraceSetting = _not_offered
    LogSettings = _not_offered


def _parameter_value(param: pb.ModelRepositoryParameter) -> object:
    choice = param.WhichOneof("parameter_choice")
    return getattr(param, choice) if choice else None
