"""GRPCInferenceService: maps OIP messages to the cores and back.

Thin on purpose: inference lives in `dataplane` (decoding in `codec`, answers
in `responses`), lifecycle in `model_manager`, shared memory regions in
`shared_memory`; errors become status codes in `maps_errors`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from modelport import __version__
from modelport.artifacts.config import read_config
from modelport.artifacts.repository import model_dir
from modelport.common import tracing
from modelport.common.grpc_errors import maps_errors
from modelport.errors import (
    FailedPrecondition,
    ModelportError,
    NotFound,
    Unavailable,
    Unimplemented,
)
from modelport.inference.cuda_shared_memory import CudaSharedMemory
from modelport.inference.dataplane import DataPlane
from modelport.inference.load_overrides import parse_load_parameters
from modelport.inference.model_manager import ModelManager
from modelport.inference.peers import PeerGroup, from_peer, merge_statistics
from modelport.inference.shared_memory import SystemSharedMemory
from modelport.inference.stats import Duration, VersionStats
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

EXTENSIONS = ["classification", "sequence", "sequence(string_id)", "model_repository",
              "model_configuration", "system_shared_memory", "binary_tensor_data",
              "parameters", "statistics"]  # fmt: skip


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        manager: ModelManager,
        peers: PeerGroup,
        *,
        explicit_control: bool,
        shared_memory: SystemSharedMemory | None = None,
    ) -> None:
        self._manager = manager
        self._explicit = explicit_control
        self.shm = shared_memory if shared_memory is not None else SystemSharedMemory()
        self.cuda_shm = CudaSharedMemory()
        self.dataplane = DataPlane(manager, self.shm, self._sequence_owner)
        self.ready = False
        self.peers = peers  # sibling workers, when several share the port

    # -- health and metadata --------------------------------------------------------

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready and not self._manager.draining)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        try:
            self._manager.get(request.name, request.version)
        except ModelportError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="modelport", version=__version__, extensions=EXTENSIONS
        )

    @maps_errors
    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
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

    @maps_errors
    async def ModelConfig(self, request: Any, context: Any) -> pb.ModelConfigResponse:
        served = self._manager.get(request.name, request.version)
        return pb.ModelConfigResponse(config=served.spec.config)

    # -- inference ------------------------------------------------------------------

    @maps_errors
    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        with tracing.server_span("ModelInfer", context, model=request.model_name):
            return await self.dataplane.infer(
                request, context.time_remaining(), local=from_peer(context)
            )

    def _sequence_owner(self, key: str) -> Any:
        """The sibling worker holding a sequence, as a call (None: this worker)."""
        if not self.peers:
            return None
        stub = self.peers.owner(key)
        if stub is None:
            return None
        return lambda request: self.peers.infer(stub, request, None)

    @maps_errors
    async def ModelStreamInfer(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for item in self.dataplane.stream(request_iterator):
            yield item

    # -- statistics and repository --------------------------------------------------

    @maps_errors
    async def ModelStatistics(self, request: Any, context: Any) -> pb.ModelStatisticsResponse:
        names = [request.name] if request.name else [e.name for e in self._manager.loaded()]
        entries = [self._manager.entry(name) for name in names]
        response = pb.ModelStatisticsResponse()
        for entry in entries:
            versions = entry.versions.values()
            if request.version:
                versions = [self._manager.get(request.name, request.version)]  # type: ignore[assignment]
            for served in versions:
                response.model_stats.append(_statistics_message(served.stats))
        if self.peers and not from_peer(context):
            gathered = [*response.model_stats, *await self.peers.statistics(request)]
            return pb.ModelStatisticsResponse(model_stats=merge_statistics(gathered))
        return response

    @maps_errors
    async def RepositoryIndex(self, request: Any, context: Any) -> pb.RepositoryIndexResponse:
        self._check_repository(request.repository_name)
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                index(name=e.name, version=e.version, state=e.state, reason=e.reason)
                for e in self._manager.index(ready_only=request.ready)
            ]
        )

    @maps_errors
    async def RepositoryModelLoad(
        self, request: Any, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        self._check_control(request.repository_name, "load")
        override = None
        if request.parameters:
            parameters = {k: _parameter_value(v) for k, v in request.parameters.items()}
            override = parse_load_parameters(
                request.model_name, parameters, self._repository_config(request.model_name)
            )
        await self._manager.load(request.model_name, override)
        if self.peers and not from_peer(context):
            await self.peers.load(request)
        return pb.RepositoryModelLoadResponse()

    @maps_errors
    async def RepositoryModelUnload(
        self, request: Any, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        self._check_control(request.repository_name, "unload")
        await self._manager.unload(request.model_name)
        if self.peers and not from_peer(context):
            await self.peers.unload(request)
        return pb.RepositoryModelUnloadResponse()

    def _repository_config(self, name: str) -> Any:
        repository = self._manager.repository
        if repository is None:
            return None
        try:
            return read_config(model_dir(repository, name))
        except (ModelportError, OSError):
            return None

    def _check_repository(self, name: str) -> None:
        if name and name != "default":
            raise NotFound(f"repository '{name}' does not exist (this server has 'default')")

    def _check_control(self, repository: str, action: str) -> None:
        self._check_repository(repository)
        if not self._explicit:
            raise FailedPrecondition(
                f"explicit model {action} is disabled; start the server with "
                "--model-control-mode explicit"
            )
        if self._manager.draining:
            raise Unavailable("server is shutting down")

    # -- shared memory ----------------------------------------------------------------

    @maps_errors
    async def SystemSharedMemoryStatus(
        self, request: Any, context: Any
    ) -> pb.SystemSharedMemoryStatusResponse:
        response = pb.SystemSharedMemoryStatusResponse()
        for region in self.shm.status(request.name):
            response.regions[region.name].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(
                    name=region.name,
                    key=region.key,
                    offset=region.offset,
                    byte_size=region.byte_size,
                )
            )
        return response

    @maps_errors
    async def SystemSharedMemoryRegister(
        self, request: Any, context: Any
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self.shm.register(request.name, request.key, request.offset, request.byte_size)
        if self.peers and not from_peer(context):
            await self.peers.each("SystemSharedMemoryRegister", request)
        return pb.SystemSharedMemoryRegisterResponse()

    @maps_errors
    async def SystemSharedMemoryUnregister(
        self, request: Any, context: Any
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self.shm.unregister(request.name)
        if self.peers and not from_peer(context):
            await self.peers.each("SystemSharedMemoryUnregister", request)
        return pb.SystemSharedMemoryUnregisterResponse()

    @maps_errors
    async def CudaSharedMemoryStatus(
        self, request: Any, context: Any
    ) -> pb.CudaSharedMemoryStatusResponse:
        self.cuda_shm.status(request.name)
        return pb.CudaSharedMemoryStatusResponse()

    @maps_errors
    async def CudaSharedMemoryRegister(
        self, request: Any, context: Any
    ) -> pb.CudaSharedMemoryRegisterResponse:
        self.cuda_shm.register(request.name)
        return pb.CudaSharedMemoryRegisterResponse()

    @maps_errors
    async def CudaSharedMemoryUnregister(
        self, request: Any, context: Any
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        self.cuda_shm.unregister(request.name)
        return pb.CudaSharedMemoryUnregisterResponse()

    # -- declared by the protocol, not offered ------------------------------------

    @maps_errors
    async def _unimplemented(self, request: Any, context: Any) -> Any:
        raise Unimplemented(
            "not supported by modelport: trace and log settings are not offered "
            "(use --log-level and --otlp-endpoint)"
        )

    TraceSetting = _unimplemented
    LogSettings = _unimplemented


def _parameter_value(param: pb.ModelRepositoryParameter) -> object:
    choice = param.WhichOneof("parameter_choice")
    return getattr(param, choice) if choice else None


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def _statistics_message(stats: VersionStats) -> pb.ModelStatistics:
    return pb.ModelStatistics(
        name=stats.model,
        version=stats.version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success),
            fail=_duration(stats.fail),
            queue=_duration(stats.queue),
            compute_input=_duration(stats.compute_input),
            compute_infer=_duration(stats.compute_infer),
            compute_output=_duration(stats.compute_output),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=size,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
            for size, b in sorted(stats.batches.items())
        ],
    )
