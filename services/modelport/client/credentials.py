"""A caller's API key or bearer token, sent as `authorization: Bearer …` on every call.

Interceptors, not gRPC call credentials: those are refused on plaintext
channels, and a loopback deployment without TLS still authenticates callers.
The CLI commands and the load tester take the key from `--api-key` or
`MODELPORT_API_KEY`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

# A service acting for a caller (the training service registering a job's version)
# names that caller here; the server still authorizes the service's own identity and
# records the named one in its audit events.
ON_BEHALF_OF = "x-modelport-on-behalf-of"


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _with(metadata: Any, extra: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return (*(tuple(metadata) if metadata else ()), *extra)


class _Details(grpc.ClientCallDetails):
    def __init__(self, details: grpc.ClientCallDetails, metadata: Sequence[tuple[str, str]]):
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = tuple(metadata)
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class SyncAuthInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: str | None, extra: Sequence[tuple[str, str]] = ()) -> None:
        self._metadata = (*(bearer_metadata(token) if token else ()), *extra)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _Details(details, _with(details.metadata, self._metadata))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def _aio_details(details: Any, extra: Sequence[tuple[str, str]]) -> Any:
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=grpc.aio.Metadata(*_with(details.metadata, extra)),
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = metadata

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_aio_details(details, self._metadata), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = metadata

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_aio_details(details, self._metadata), request)


class _AioStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = metadata

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_aio_details(details, self._metadata), requests)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = metadata

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_aio_details(details, self._metadata), requests)


def aio_interceptors(token: str | None) -> list[grpc.aio.ClientInterceptor]:
    if not token:
        return []
    metadata = bearer_metadata(token)
    return [
        _AioUnaryUnary(metadata),
        _AioUnaryStream(metadata),
        _AioStreamUnary(metadata),
        _AioStreamStream(metadata),
    ]
