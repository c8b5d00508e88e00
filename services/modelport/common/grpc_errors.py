"""The error boundary: the one place where exceptions become gRPC statuses.

Every method handler of every service a `GrpcServer` serves is wrapped here
when it is registered (`guard`), unary or streaming, so no RPC can escape it
and no servicer maps errors (or calls `context.abort`) itself:
- a domain error (`modelport.errors`) ends the call with its status code and
  its message, which names the model, version and field at fault;
- `NotImplementedError` (a method the servicer does not define) is UNIMPLEMENTED;
- anything else is logged with its stack trace here and reaches the caller as
  INTERNAL with a short message, never the trace.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from modelport import errors

log = logging.getLogger(__name__)

GUARDED = "__modelport_boundary__"  # marks a behaviour wrapped by `guard`


def status_of(error: BaseException) -> grpc.StatusCode:
    return grpc.StatusCode[errors.code_of(error)]


public_message = errors.public_message


async def _end_call(method: str, exc: Exception, context: grpc.aio.ServicerContext) -> None:
    if not isinstance(exc, (errors.ModelportError, NotImplementedError)):
        log.error("unexpected error in %s", method, exc_info=exc)
    await context.abort(status_of(exc), public_message(exc))


def _guard_unary_response(method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behaviour(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _end_call(method, exc, context)

    return guarded


def _guard_stream_response(method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    if not inspect.isasyncgenfunction(behaviour):  # a coroutine that writes to the context
        return _guard_unary_response(method, behaviour)

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in behaviour(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _end_call(method, exc, context)

    return guarded


def guard(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour inside the error boundary."""
    if is_guarded(handler):
        return handler
    if handler.request_streaming and handler.response_streaming:
        make, inner, wrap = (grpc.stream_stream_rpc_method_handler, handler.stream_stream,
                             _guard_stream_response)  # fmt: skip
    elif handler.request_streaming:
        make, inner, wrap = (grpc.stream_unary_rpc_method_handler, handler.stream_unary,
                             _guard_unary_response)  # fmt: skip
    elif handler.response_streaming:
        make, inner, wrap = (grpc.unary_stream_rpc_method_handler, handler.unary_stream,
                             _guard_stream_response)  # fmt: skip
    else:
        make, inner, wrap = (grpc.unary_unary_rpc_method_handler, handler.unary_unary,
                             _guard_unary_response)  # fmt: skip
    assert inner is not None  # the behaviour for the handler's streaming kind
    behaviour = wrap(method, inner)
    setattr(behaviour, GUARDED, method)
    return make(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def is_guarded(handler: grpc.RpcMethodHandler) -> bool:
    behaviour = (handler.unary_unary or handler.unary_stream or handler.stream_unary
                 or handler.stream_stream)  # fmt: skip
    return getattr(behaviour, GUARDED, None) is not None


Handlers = dict[str, grpc.RpcMethodHandler]


class GuardedRegistrar:
    """What a service's `add_…_to_server` sees in place of the server.

    Generated registration functions hand over their method handlers by name
    (`add_registered_method_handlers`); each is guarded, then registered on the
    real server both as registered methods and as a generic handler. A generic
    handler that arrives without its method handlers cannot be guarded, and is
    refused rather than let through unguarded.
    """

    def __init__(self, server: grpc.aio.Server, register: Callable[[str, Handlers], None]) -> None:
        self._server = server
        self._register = register
        self._opaque: list[grpc.GenericRpcHandler] = []

    def add_method_handlers(self, service: str, handlers: Handlers) -> None:
        guarded = {name: guard(f"/{service}/{name}", h) for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, guarded),)
        )
        self._server.add_registered_method_handlers(service, guarded)
        self._register(service, guarded)

    # The two calls generated code makes, in this order.
    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._opaque.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Handlers) -> None:
        self._opaque = [h for h in self._opaque if _service_name(h) != service]
        self.add_method_handlers(service, handlers)

    def close(self) -> None:
        if self._opaque:
            names = ", ".join(str(_service_name(h)) for h in self._opaque)
            raise TypeError(f"handlers registered without their methods cannot be guarded: {names}")


def _service_name(handler: grpc.GenericRpcHandler) -> str | None:
    name = getattr(handler, "service_name", None)
    return name() if callable(name) else None
