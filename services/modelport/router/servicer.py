"""`inference.GRPCInferenceService` at the router: a thin layer over `Router` and `Fleet`.

Registered from method handlers so ModelInfer and ModelStreamInfer take and
return raw bytes: the router reads the routing fields and forwards the rest
untouched. The other methods are typed and answered by the `Fleet` core: from
a replica serving the model, or from all of them (RepositoryIndex, statistics).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from modelport import __version__, errors
from modelport.common import tracing
from modelport.common.stream_window import answer_as_ready
from modelport.common.wire import readable_id
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.router import shared_memory, wire
from modelport.router.fleet import Fleet
from modelport.router.forwarding import Router
from modelport.router.grpc_backends import FORWARDED_KEYS, forwarded_metadata
from modelport.router.scale_from_zero import TRAILER_KEY, cold_start_of_request

Context = grpc.aio.ServicerContext

SERVICE = "inference.GRPCInferenceService"
SESSION_KEY = "x-modelport-session"
EXTENSIONS = [
    "model_configuration",
    "model_repository",
    "statistics",
    "system_shared_memory",
    "modelport_router",
]


def _read_metadata(context: Context) -> str:
    """The session key; trace headers are stored for the backend call."""
    session = ""
    carried: list[tuple[str, str]] = []
    for key, value in context.invocation_metadata() or ():
        if key == SESSION_KEY:
            session = value if isinstance(value, str) else value.decode()
        elif key in FORWARDED_KEYS and isinstance(value, str):  # trace headers: text
            carried.append((key, value))
    if carried:
        forwarded_metadata.set(tuple(carried))
    return session


def _deadline(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _routing(request: bytes) -> tuple[str, str, str, str]:
    """(model, version, id, sequence key) of a serialized request, checked."""
    try:
        model, version, request_id, sequence = wire.request_routing(request)
    except ValueError as exc:
        raise errors.InvalidInput(str(exc)) from None
    if not model:
        raise errors.InvalidInput("ModelInferRequest: model_name is empty")
    return model, version, request_id, sequence


class RouterServicer:
    def __init__(self, router: Router, fleet: Fleet) -> None:
        self._router = router
        self._fleet = fleet

    # -- inference: raw bytes in, raw bytes out ---------------------------------

    async def _infer(self, request: bytes, context: Context) -> bytes:
        model, version, _, sequence = _routing(request)
        with tracing.server_span("ModelInfer", context, model=model):
            answer = await self._router.infer(
                model, version, request, _read_metadata(context), _deadline(context), sequence
            )
        cold = cold_start_of_request.get()
        if cold is not None:
            # The first request released after a cold start says where the time went.
            context.set_trailing_metadata(((TRAILER_KEY, cold.header()),))
        return answer

    async def ModelInfer(self, request: bytes, context: Context) -> bytes:
        return await self._infer(request, context)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[bytes]:
        """Each request is routed on its own and runs concurrently with the others;
        answers are sent as they are ready, each with its request's id, as the
        inference service does (`answer_as_ready`), a request's several answers
        (a decoupled model) in their order. Requests of one sequence are
        forwarded one after the other, so the replica holding it gets them in
        order."""
        session = _read_metadata(context)
        last_of: dict[tuple[str, str], asyncio.Future[None]] = {}

        async def respond(request: bytes) -> AsyncIterator[bytes]:
            # Runs in read order up to its first await: a sequence's order is kept.
            done: asyncio.Future[None] | None = None
            try:
                model, version, _, sequence = _routing(request)
                if sequence:
                    key = (model, sequence)
                    before = last_of.get(key)
                    done = last_of[key] = asyncio.get_running_loop().create_future()
                    if before is not None:
                        await asyncio.wait([before])
                async for message in self._router.stream(
                    model, version, request, session, None, sequence
                ):
                    yield message
            except Exception as exc:
                only_id = pb.ModelInferResponse(id=readable_id(request)).SerializeToString()
                yield wire.stream_error(errors.public_message(exc), only_id)
            finally:
                if done is not None:
                    done.set_result(None)
                    for key, future in list(last_of.items()):
                        if future is done:
                            del last_of[key]

        async for answer in answer_as_ready(requests, respond, size=len):
            yield answer

    # -- per-model and fleet-wide calls (see `fleet`) ---------------------------

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        return await self._fleet.model_metadata(request.name, request.version)

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        return await self._fleet.model_config(request.name, request.version)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(
            ready=await self._fleet.model_ready(request.name, request.version)
        )

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        return await self._fleet.statistics(request.name, request.version)

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        return await self._fleet.index(request)

    # -- server-level calls ---------------------------------------------------

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._fleet.server_ready())

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="modelport-router", version=__version__, extensions=EXTENSIONS
        )

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        raise errors.PermissionDenied(
            f"model '{request.model_name}': load is refused at the router; the registry "
            "and the deployments decide what is loaded"
        )

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        raise errors.PermissionDenied(
            f"model '{request.model_name}': unload is refused at the router; the registry "
            "and the deployments decide what is loaded"
        )

    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: Context
    ) -> pb.SystemSharedMemoryStatusResponse:
        return self._fleet.shared_memory.status(request)

    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: Context
    ) -> pb.SystemSharedMemoryRegisterResponse:
        return await self._fleet.shared_memory.register(request)

    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: Context
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        return await self._fleet.shared_memory.unregister(request)

    # CUDA regions: none are held, so clearing them (as Triton's examples do first) is a
    # no-op and registering one is refused with the reason.
    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, context: Context
    ) -> pb.CudaSharedMemoryStatusResponse:
        return shared_memory.cuda_status(request)

    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest, context: Context
    ) -> pb.CudaSharedMemoryRegisterResponse:
        shared_memory.cuda_register(request)
        return pb.CudaSharedMemoryRegisterResponse()

    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context: Context
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        return pb.CudaSharedMemoryUnregisterResponse()

    async def NotAtRouter(self, request: object, context: Context) -> object:
        raise errors.Unimplemented("not available at the router; ask an inference service")


TYPED: dict[str, Any] = {
    "ServerLive": pb.ServerLiveRequest,
    "ServerReady": pb.ServerReadyRequest,
    "ModelReady": pb.ModelReadyRequest,
    "ServerMetadata": pb.ServerMetadataRequest,
    "ModelMetadata": pb.ModelMetadataRequest,
    "ModelConfig": pb.ModelConfigRequest,
    "ModelStatistics": pb.ModelStatisticsRequest,
    "RepositoryIndex": pb.RepositoryIndexRequest,
    "RepositoryModelLoad": pb.RepositoryModelLoadRequest,
    "RepositoryModelUnload": pb.RepositoryModelUnloadRequest,
    "SystemSharedMemoryStatus": pb.SystemSharedMemoryStatusRequest,
    "SystemSharedMemoryRegister": pb.SystemSharedMemoryRegisterRequest,
    "SystemSharedMemoryUnregister": pb.SystemSharedMemoryUnregisterRequest,
    "CudaSharedMemoryStatus": pb.CudaSharedMemoryStatusRequest,
    "CudaSharedMemoryRegister": pb.CudaSharedMemoryRegisterRequest,
    "CudaSharedMemoryUnregister": pb.CudaSharedMemoryUnregisterRequest,
}
NOT_AT_ROUTER: dict[str, Any] = {
    "TraceSetting": pb.TraceSettingRequest,
    "LogSettings": pb.LogSettingsRequest,
}


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def method_handlers(servicer: RouterServicer) -> dict[str, grpc.RpcMethodHandler]:
    """Every method of the service; inference methods on raw bytes."""
    handlers: dict[str, grpc.RpcMethodHandler] = {
        # No (de)serializers: the behaviour gets bytes and returns bytes.
        "ModelInfer": grpc.unary_unary_rpc_method_handler(servicer.ModelInfer),
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(servicer.ModelStreamInfer),
    }
    for name, request_type in TYPED.items():
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=request_type.FromString,
            response_serializer=_serialize,
        )
    for name, request_type in NOT_AT_ROUTER.items():
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            servicer.NotAtRouter,
            request_deserializer=request_type.FromString,
            response_serializer=_serialize,
        )
    return handlers
