"""`inference.GRPCInferenceService` at the router: a thin layer over `Router`.

Registered as a generic handler so ModelInfer and ModelStreamInfer take and
return raw bytes: the router reads the routing fields and forwards the rest
untouched. The other methods are typed and answered from a replica serving
the model (or from all of them, for RepositoryIndex and statistics).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from modelport import __version__, errors
from modelport.common import tracing
from modelport.common.grpc_errors import maps_errors, public_message, status_of
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.router import wire
from modelport.router.balancer import Balancer
from modelport.router.forwarding import Router
from modelport.router.grpc_backends import FORWARDED_KEYS, GrpcTransport, forwarded_metadata
from modelport.router.replicas import Replica

SERVICE = "inference.GRPCInferenceService"
SESSION_KEY = "x-modelport-session"
EXTENSIONS = ["model_configuration", "model_repository", "statistics", "modelport_router"]


def _read_metadata(context: grpc.aio.ServicerContext) -> str:
    """The session key; trace headers are stored for the backend call."""
    session = ""
    carried = []
    for key, value in context.invocation_metadata() or ():
        if key == SESSION_KEY:
            session = value if isinstance(value, str) else value.decode()
        elif key in FORWARDED_KEYS:
            carried.append((key, value))
    if carried:
        forwarded_metadata.set(tuple(carried))
    return session


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _routing(request: bytes) -> tuple[str, str, str]:
    try:
        model, version, request_id = wire.routing_fields(request)
    except ValueError as exc:
        raise errors.InvalidInput(str(exc)) from None
    if not model:
        raise errors.InvalidInput("ModelInferRequest: model_name is empty")
    return model, version, request_id


class RouterServicer:
    def __init__(self, router: Router, transport: GrpcTransport) -> None:
        self.router = router
        self.transport = transport
        self.balancer: Balancer = router.balancer
        # (model, status code name) -> count; exported by `telemetry`.
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.on_duration: Any = None  # callable(model, seconds), set by telemetry

    # -- inference ------------------------------------------------------------

    async def _infer(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        started = time.perf_counter()
        model, version, _ = _routing(request)
        code = "OK"
        try:
            with tracing.server_span("ModelInfer", context, model=model):
                return await self.router.infer(
                    model, version, request, _read_metadata(context), _deadline(context)
                )
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:
            code = status_of(exc).name
            raise
        finally:
            self.outcomes[(model, code)] += 1
            if self.on_duration is not None:
                self.on_duration(model, time.perf_counter() - started)

    @maps_errors
    async def ModelInfer(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await self._infer(request, context)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Each request is routed on its own; answers come back in request order."""
        pending: asyncio.Queue[asyncio.Task[bytes] | None] = asyncio.Queue(maxsize=256)

        async def one(request: bytes) -> bytes:
            try:
                return wire.stream_response(await self._infer(request, context))
            except Exception as exc:
                request_id = ""
                with contextlib.suppress(ValueError):
                    request_id = wire.routing_fields(request)[2]
                only_id = pb.ModelInferResponse(id=request_id).SerializeToString()
                return wire.stream_error(public_message(exc), only_id)

        async def read() -> None:
            try:
                async for request in requests:
                    await pending.put(asyncio.ensure_future(one(request)))
            finally:
                await pending.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await pending.get()) is not None:
                yield await task
        finally:
            reader.cancel()

    # -- per-model calls, answered by a replica serving the version -----------

    def _replica_for(self, model: str, version_ref: str) -> tuple[Replica, str]:
        version = self.router.planner.resolve(model, version_ref)
        return self.balancer.pick(model, version), version

    @maps_errors
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        replica, version = self._replica_for(request.name, request.version)
        ask = pb.ModelMetadataRequest(name=request.name, version=version)
        return await self.transport.call(replica, "ModelMetadata", ask)

    @maps_errors
    async def ModelConfig(self, request: Any, context: Any) -> Any:
        replica, version = self._replica_for(request.name, request.version)
        ask = pb.ModelConfigRequest(name=request.name, version=version)
        return await self.transport.call(replica, "ModelConfig", ask)

    @maps_errors
    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            replica, version = self._replica_for(request.name, request.version)
        except (errors.NotFound, errors.Unavailable):
            return pb.ModelReadyResponse(ready=False)
        ask = pb.ModelReadyRequest(name=request.name, version=version)
        return await self.transport.call(replica, "ModelReady", ask)

    @maps_errors
    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        if request.name:
            replica, version = self._replica_for(request.name, request.version)
            ask = pb.ModelStatisticsRequest(name=request.name, version=version)
            return await self.transport.call(replica, "ModelStatistics", ask)
        # Every model: one replica per model, each asked about that model.
        merged = pb.ModelStatisticsResponse()
        for model in sorted(self.balancer.table.known_models()):
            try:
                replica = self.balancer.pick(model, "")
            except errors.ModelportError:
                continue
            answer = await self.transport.call(
                replica, "ModelStatistics", pb.ModelStatisticsRequest(name=model)
            )
            merged.model_stats.extend(answer.model_stats)
        return merged

    @maps_errors
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        replicas = [r for r in self.balancer.table.replicas.values() if r.takes_traffic()]
        answers = await asyncio.gather(
            *(self.transport.call(r, "RepositoryIndex", request, 5.0) for r in replicas),
            return_exceptions=True,
        )
        entries: dict[tuple[str, str], Any] = {}
        for answer in answers:
            if isinstance(answer, BaseException):
                continue
            for entry in answer.models:
                key = (entry.name, entry.version)
                # A version READY anywhere is READY behind the router.
                if key not in entries or entry.state == "READY":
                    entries[key] = entry
        # A replica that merely has a model on disk reports it without a version
        # ("unloaded"); behind the router that says nothing when others serve it.
        served = {name for (name, _), e in entries.items() if e.state == "READY"}
        merged = pb.RepositoryIndexResponse()
        merged.models.extend(
            entries[key] for key in sorted(entries) if key[1] or key[0] not in served
        )
        return merged

    # -- server-level calls ---------------------------------------------------

    @maps_errors
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    @maps_errors
    async def ServerReady(self, request: Any, context: Any) -> Any:
        table = self.balancer.table
        ready = any(r.takes_traffic() and r.versions for r in table.replicas.values())
        return pb.ServerReadyResponse(ready=ready)

    @maps_errors
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(
            name="modelport-router", version=__version__, extensions=EXTENSIONS
        )

    @maps_errors
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        raise errors.PermissionDenied(
            f"model '{request.model_name}': load is refused at the router; the registry "
            "and the deployments decide what is loaded"
        )

    @maps_errors
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        raise errors.PermissionDenied(
            f"model '{request.model_name}': unload is refused at the router; the registry "
            "and the deployments decide what is loaded"
        )

    @maps_errors
    async def NotAtRouter(self, request: Any, context: Any) -> Any:
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
}
NOT_AT_ROUTER: dict[str, Any] = {
    "SystemSharedMemoryStatus": pb.SystemSharedMemoryStatusRequest,
    "SystemSharedMemoryRegister": pb.SystemSharedMemoryRegisterRequest,
    "SystemSharedMemoryUnregister": pb.SystemSharedMemoryUnregisterRequest,
    "CudaSharedMemoryStatus": pb.CudaSharedMemoryStatusRequest,
    "CudaSharedMemoryRegister": pb.CudaSharedMemoryRegisterRequest,
    "CudaSharedMemoryUnregister": pb.CudaSharedMemoryUnregisterRequest,
    "TraceSetting": pb.TraceSettingRequest,
    "LogSettings": pb.LogSettingsRequest,
}


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def generic_handler(
    servicer: RouterServicer,
    wrap: Callable[[str, dict[str, grpc.RpcMethodHandler]], dict[str, grpc.RpcMethodHandler]]
    | None = None,
) -> grpc.GenericRpcHandler:
    """Every method of the service; inference methods on raw bytes. `wrap` (the
    router's access control) gets the handlers by name first."""
    handlers = method_handlers(servicer)
    return grpc.method_handlers_generic_handler(
        SERVICE, wrap(SERVICE, handlers) if wrap else handlers
    )


def method_handlers(servicer: RouterServicer) -> dict[str, grpc.RpcMethodHandler]:
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
