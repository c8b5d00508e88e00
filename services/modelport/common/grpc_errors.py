"""The error boundary: the one place where exceptions become gRPC statuses.

Every method handler of every service a `GrpcServer` serves is wrapped here
when it is registered (`guard`), unary or streaming, so no RPC can escape it
and no servicer maps errors (or calls `context.abort`) itself:
- the request bytes are parsed here, not by grpc: a message that does not
  parse is INVALID_ARGUMENT (`errors.MalformedRequest`) with one log line, not
  UNKNOWN with a stack trace per request. A stream's messages are parsed one by
  one as the servicer reads them; a servicer that wants to answer a bad message
  in-band (ModelStreamInfer) catches `MalformedRequest` and reads on;
- a domain error (`modelport.errors`) ends the call with its status code and
  its message, which names the model, version and field at fault;
- `NotImplementedError` (a method the servicer does not define) is UNIMPLEMENTED;
- anything else is logged with its stack trace here and reaches the caller as
  INTERNAL with a short message, never the trace.

Calls end by setting the status on the context, not by raising through grpc
(`context.abort`): an exception raised there is kept in a reference cycle with
the frames it passed, and those frames hold the request, so every rejected
60 MB request stayed in memory until the cyclic collector happened to run.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from modelport import errors

log = logging.getLogger(__name__)

GUARDED = "__modelport_boundary__"  # marks a behaviour wrapped by `guard`


def status_of(error: BaseException) -> grpc.StatusCode:
    return grpc.StatusCode[errors.code_of(error)]


public_message = errors.public_message

Parse = Callable[[bytes], Any]


def retry_trailers(error: errors.QuotaExceeded) -> tuple[tuple[str, str], ...]:
    """When to try again: `retry-after` (whole seconds, as HTTP's header) and gRPC's
    own `grpc-retry-pushback-ms`, which clients with a retry policy honour."""
    seconds = max(0.001, error.retry_after_seconds)
    return (
        ("retry-after", str(max(1, math.ceil(seconds)))),
        ("grpc-retry-pushback-ms", str(math.ceil(seconds * 1000))),
    )


def parser(method: str, deserializer: Parse | None) -> Parse | None:
    """The handler's deserializer, raising MalformedRequest for bytes that do not parse."""
    if deserializer is None:  # the behaviour takes bytes (the router's data plane)
        return None
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    what = f"{method}: not a valid {getattr(descriptor, 'full_name', 'request message')}"

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            if reason.startswith("Error parsing message"):  # protobuf names the type: we did
                reason = reason.partition("': ")[2] or reason
            raise errors.MalformedRequest(f"{what}: {reason[:200]}", data) from None

    return parse


class ParsedMessages:
    """A request stream, each message parsed as the servicer reads it.

    A message that does not parse raises `MalformedRequest` from `__anext__`;
    the stream stays readable after it, so a servicer may answer that one
    message with an error and go on.
    """

    def __init__(self, messages: AsyncIterator[bytes], parse: Parse) -> None:
        self._source = messages
        self._messages: AsyncIterator[bytes] | None = None  # opened on the first read
        self._parse = parse

    def __aiter__(self) -> ParsedMessages:
        return self

    async def __anext__(self) -> Any:
        if self._messages is None:
            self._messages = aiter(self._source)
        return self._parse(await anext(self._messages))


def _reader(parse: Parse | None, streaming: bool) -> Callable[[Any], Any]:
    """What the behaviour gets for the request grpc hands over (bytes, or a stream of them)."""
    if parse is None:
        return lambda request: request
    if streaming:
        return lambda messages: ParsedMessages(messages, parse)
    return parse


def outcome(method: str, exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status and message a call that raised `exc` ends with, logged as it should
    be: a malformed request in one line, an unexpected error with its stack trace."""
    if isinstance(exc, errors.MalformedRequest):
        log.info("%s", exc)
    elif not isinstance(exc, (errors.ModelportError, NotImplementedError)):
        log.error("unexpected error in %s", method, exc_info=exc)
    return status_of(exc), public_message(exc)


def _end_call(method: str, exc: Exception, context: grpc.aio.ServicerContext) -> None:
    """Set the call's final status (no raise: see the module's docstring)."""
    code, message = outcome(method, exc)
    if isinstance(exc, errors.QuotaExceeded):
        context.set_trailing_metadata(retry_trailers(exc))
    context.set_code(code)
    context.set_details(message)


def _guard_unary_response(
    method: str, behaviour: Callable[..., Any], read: Callable[[Any], Any]
) -> Callable[..., Any]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behaviour(read(request), context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            _end_call(method, exc, context)
        return None  # the status is set; grpc sends no message with it

    return guarded


def _guard_stream_response(
    method: str, behaviour: Callable[..., Any], read: Callable[[Any], Any]
) -> Callable[..., Any]:
    if not inspect.isasyncgenfunction(behaviour):  # a coroutine that writes to the context
        return _guard_unary_response(method, behaviour, read)

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in behaviour(read(request), context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            _end_call(method, exc, context)

    return guarded


def guard(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour inside the error boundary.

    The guarded handler takes the request as bytes (no deserializer): parsing
    happens inside the boundary, so a malformed message gets a clear status.
    """
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
    read = _reader(parser(method, handler.request_deserializer), handler.request_streaming)
    behaviour = wrap(method, inner, read)
    setattr(behaviour, GUARDED, method)
    return make(behaviour, request_deserializer=None,
                response_serializer=handler.response_serializer)  # fmt: skip


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

    def __init__(
        self,
        server: grpc.aio.Server,
        register: Callable[[str, Handlers], None],
        wrap: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler] | None = None,
    ) -> None:
        self._server = server
        self._register = register
        # Inside the boundary, around each handler: the server's access control.
        self._wrap = wrap
        self._opaque: list[grpc.GenericRpcHandler] = []

    def add_method_handlers(self, service: str, handlers: Handlers) -> None:
        wrap = self._wrap
        guarded = {
            name: guard(path, wrap(path, h) if wrap is not None else h)
            for name, h in handlers.items()
            for path in (f"/{service}/{name}",)
        }
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
