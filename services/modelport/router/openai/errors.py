"""modelport errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from typing import Any

from modelport.errors import ModelportError

# code → (HTTP status, OpenAI error type)
_BY_CODE = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "NOT_FOUND": (404, "invalid_request_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "UNAUTHENTICATED": (401, "authentication_error"),
    "PERMISSION_DENIED": (403, "permission_error"),
    "FAILED_PRECONDITION": (400, "invalid_request_error"),
    "UNAVAILABLE": (503, "server_error"),
    "DEADLINE_EXCEEDED": (504, "server_error"),
    "CANCELLED": (499, "server_error"),
    "UNIMPLEMENTED": (501, "invalid_request_error"),
}


def error_body(
    message: str, kind: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def from_error(error: Exception) -> tuple[int, dict[str, Any]]:
    """HTTP status and body for any exception; unknown ones say nothing of their insides."""
    if isinstance(error, ModelportError):
        status, kind = _BY_CODE.get(error.code, (500, "server_error"))
        code = "model_not_found" if error.code == "NOT_FOUND" else error.code.lower()
        return status, error_body(str(error), kind, code=code)
    return 500, error_body("internal error", "server_error", code="internal")
