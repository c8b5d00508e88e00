"""The one place where domain errors become gRPC status codes."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from modelport import errors

log = logging.getLogger(__name__)


def status_of(error: BaseException) -> grpc.StatusCode:
    if isinstance(error, errors.ModelportError):
        return grpc.StatusCode[error.code]
    return grpc.StatusCode.INTERNAL


def public_message(error: BaseException) -> str:
    """What the caller reads: our message, never a stack trace."""
    if isinstance(error, errors.ModelportError):
        return str(error)
    return f"internal error ({type(error).__name__}); see the server log"


F = TypeVar("F", bound=Callable[..., Any])


def maps_errors(method: F) -> F:
    """Decorate an aio servicer method: domain errors abort with their status.

    Unexpected exceptions are logged with their trace here and reach the
    caller as INTERNAL with a short message.
    """
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream_wrapper(self: Any, request: Any, context: Any) -> Any:
            try:
                async for item in method(self, request, context):
                    yield item
            except errors.ModelportError as exc:
                await context.abort(status_of(exc), public_message(exc))
            except (grpc.aio.AbortError, grpc.aio.UsageError):
                raise
            except Exception as exc:
                log.exception("unexpected error in %s", method.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, public_message(exc))

        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except errors.ModelportError as exc:
            await context.abort(status_of(exc), public_message(exc))
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.exception("unexpected error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, public_message(exc))

    return wrapper  # type: ignore[return-value]
