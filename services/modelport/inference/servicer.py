"""GRPCInferenceService: maps OIP messages to the model manager and back.

Thin on purpose: decoding and encoding live in `codec`, lifecycle and batching
in `model_manager`/`batcher`; errors become status codes in `maps_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from modelport import __version__
from modelport.common import tracing
from modelport.common.grpc_errors import maps_errors, public_message
from modelport.errors import (
    FailedPrecondition,
    InvalidInput,
    ModelportError,
    NotFound,
    Unavailable,
)
from modelport.inference import codec
from modelport.inference.model_manager import ModelManager
from modelport.inference.peers import PeerGroup, from_peer, merge_statistics
from modelport.inference.stats import Duration, VersionStats
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

EXTENSIONS = ["model_repository", "model_configuration", "statistics", "binary_tensor_data",
              "parameters"]  # fmt: skip


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, manager: ModelManager, peers: PeerGroup, *, explicit_control: bool) -> None:
        self._manager = manager
        self._explicit = explicit_control
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

    async def _infer(
        self, request: pb.ModelInferRequest, remaining: float | None
    ) -> pb.ModelInferResponse:
        served = self._manager.get(request.model_name, request.model_version)
        spec = served.spec
        try:
            arrays, rows, signature = codec.decode_inputs(request, spec)
            selected = codec.requested_outputs(request, spec)
        except InvalidInput as exc:
            served.stats.request_failed(0, exc.code)
            raise
        deadline = None if remaining is None else time.monotonic() + remaining
        outputs = await served.infer(arrays, rows, signature, deadline)
        return codec.build_response(request, spec, served.version, outputs, selected)

    @maps_errors
    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        with tracing.server_span("ModelInfer", context, model=request.model_name):
            return await self._infer(request, context.time_remaining())

    @maps_errors
    async def ModelStreamInfer(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests run concurrently; each answer (or its error, in-band) is sent
        as soon as it is ready, carrying the request id."""
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()

        async def answer(request: pb.ModelInferRequest) -> None:
            try:
                response = await self._infer(request, None)
                await answers.put(pb.ModelStreamInferResponse(infer_response=response))
            except Exception as exc:
                if not isinstance(exc, ModelportError):
                    log.exception("stream request failed")
                echo = pb.ModelInferResponse(
                    model_name=request.model_name,
                    model_version=request.model_version,
                    id=request.id,
                )
                await answers.put(
                    pb.ModelStreamInferResponse(
                        error_message=public_message(exc), infer_response=echo
                    )
                )

        async def read() -> None:
            try:
                async for request in request_iterator:
                    task = asyncio.create_task(answer(request))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if running:
                    await asyncio.gather(*list(running))
            finally:
                await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await answers.get()) is not None:
                yield item
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

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
        if request.parameters:
            raise InvalidInput(
                f"model '{request.model_name}': load parameters "
                f"{sorted(request.parameters)} are not supported; change the repository instead"
            )
        await self._manager.load(request.model_name)
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

    # -- declared by the protocol, not offered ------------------------------------

    async def _unimplemented(self, request: Any, context: Any) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "not supported by modelport: send tensors in the request "
            "(shared memory, trace and log settings are not offered)",
        )

    SystemSharedMemoryStatus = _unimplemented
    SystemSharedMemoryRegister = _unimplemented
    SystemSharedMemoryUnregister = _unimplemented
    CudaSharedMemoryStatus = _unimplemented
    CudaSharedMemoryRegister = _unimplemented
    CudaSharedMemoryUnregister = _unimplemented
    TraceSetting = _unimplemented
    LogSettings = _unimplemented


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
