"""Domain errors shared by every service.

Cores raise these; they know nothing of gRPC. `modelport.common.grpc_errors`
maps each one to a status code in one place, so a caller can act on the code
and read the message, which names the model, version and field at fault.
"""

from __future__ import annotations


class ModelportError(Exception):
    """Base class: `str(error)` is the message a caller sees; `code` names the
    gRPC status (as a string, so cores stay free of grpc)."""

    code = "INTERNAL"


class NotFound(ModelportError):
    """An unknown model, version, alias or artifact."""

    code = "NOT_FOUND"


class InvalidInput(ModelportError):
    """The request itself is wrong: a name, datatype, shape or size."""

    code = "INVALID_ARGUMENT"


class MalformedRequest(InvalidInput):
    """The request's bytes do not parse as the message the method takes."""

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.data = data  # what arrived, for whoever can still read a field of it


class Unavailable(ModelportError):
    """Not ready now (loading, draining, no replica); retrying later may work."""

    code = "UNAVAILABLE"


class QueueFull(ModelportError):
    """The bounded queue is full: back off."""

    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(ModelportError):
    """The request's deadline passed before it could be answered."""

    code = "DEADLINE_EXCEEDED"


class Cancelled(ModelportError):
    """The caller went away; nothing to answer."""

    code = "CANCELLED"


class AlreadyExists(ModelportError):
    """Creating something that exists already."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(ModelportError):
    """The system is not in a state that allows the operation."""

    code = "FAILED_PRECONDITION"


class PermissionDenied(ModelportError):
    """The operation is not allowed here (e.g. load/unload at the router)."""

    code = "PERMISSION_DENIED"


class Unimplemented(ModelportError):
    """A declared operation modelport does not provide."""

    code = "UNIMPLEMENTED"


class Internal(ModelportError):
    """A bug or a model that failed while executing."""

    code = "INTERNAL"


class Unauthenticated(ModelportError):
    """Missing or bad credentials. The message never says which part was wrong:
    that would help someone guessing keys or forging tokens."""

    code = "UNAUTHENTICATED"


class QuotaExceeded(ModelportError):
    """A tenant's rate, concurrency or byte allowance is used up for now.

    `retry_after_seconds` is when trying again may succeed; the transport puts
    it in trailing metadata (gRPC) or a Retry-After header (HTTP).
    """

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class DataLoss(ModelportError):
    """Stored bytes failed their integrity check (tampered with or corrupt)."""

    code = "DATA_LOSS"


def code_of(error: BaseException) -> str:
    """The status code name a caller gets for `error` (as in `grpc.StatusCode`)."""
    if isinstance(error, ModelportError):
        return error.code
    if isinstance(error, NotImplementedError):
        return "UNIMPLEMENTED"
    return "INTERNAL"


def public_message(error: BaseException) -> str:
    """What the caller reads: our message, never a stack trace."""
    if isinstance(error, ModelportError):
        return str(error)
    if isinstance(error, NotImplementedError):
        return "method not implemented by this server"
    return f"internal error ({type(error).__name__}); see the server log"


def from_code(code: str, message: str) -> ModelportError:
    """The error of status code `code` (a name, as `grpc.StatusCode`'s) with `message`:
    how an error that travelled as text and a code name is raised again."""
    for kind in (NotFound, InvalidInput, Unavailable, QueueFull, DeadlineExceeded, Cancelled,
                 AlreadyExists, FailedPrecondition, PermissionDenied, Unimplemented):  # fmt: skip
        if kind.code == code:
            return kind(message)
    return Internal(message)
