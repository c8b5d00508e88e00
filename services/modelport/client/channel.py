"""Channels (plain or TLS) and the one error type callers catch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from modelport.client.credentials import SyncAuthInterceptor, aio_interceptors

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ModelportClientError(Exception):
    """A failed call: the gRPC status code a caller can act on, and the server's message.

    `code` is None for a failure the server reported inside a stream response
    (streaming inference reports per-request errors as messages, not statuses).
    """

    def __init__(self, code: grpc.StatusCode | None, message: str) -> None:
        self.code = code
        self.message = message
        name = code.name if code is not None else "STREAM_ERROR"
        super().__init__(f"{name}: {message}")

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> ModelportClientError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code, details or "")


def _read(value: bytes | str | Path | None) -> bytes | None:
    """PEM given inline (bytes) or as a file path."""
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


@dataclass(frozen=True)
class TlsOptions:
    """TLS for the channel: CA bundle, optional client certificate (mTLS), name override.

    Each PEM may be bytes or a path. With no CA, the system roots are used.
    """

    root_certificates: bytes | str | Path | None = None
    certificate_chain: bytes | str | Path | None = None
    private_key: bytes | str | Path | None = None
    server_name_override: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.root_certificates),
            private_key=_read(self.private_key),
            certificate_chain=_read(self.certificate_chain),
        )

    def channel_args(self) -> list[tuple[str, Any]]:
        if not self.server_name_override:
            return []
        return [("grpc.ssl_target_name_override", self.server_name_override)]


def strip_scheme(url: str) -> tuple[str, bool]:
    """'grpcs://host:port' -> ('host:port', True); 'grpc://…' or a bare target -> (…, False)."""
    for scheme, secure in (("grpcs://", True), ("grpc://", False)):
        if url.startswith(scheme):
            return url[len(scheme) :], secure
    return url, False


def channel_args(
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    tls: TlsOptions | None = None,
    extra: list[tuple[str, Any]] | None = None,
) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *(tls.channel_args() if tls else []),
        *(extra or []),
    ]


def resolve_tls(url: str, tls: TlsOptions | None) -> tuple[str, TlsOptions | None]:
    """The target without its scheme, and TLS options (a grpcs:// URL implies TLS)."""
    target, secure = strip_scheme(url)
    if secure and tls is None:
        tls = TlsOptions()
    return target, tls


def sync_channel(
    url: str,
    tls: TlsOptions | None = None,
    api_key: str | None = None,
    *,
    metadata: tuple[tuple[str, str], ...] = (),
    **kwargs: Any,
) -> grpc.Channel:
    """A channel to `url`; with `api_key` (an API key or a bearer JWT) every call
    carries `authorization: Bearer <api_key>`, and every call carries `metadata`."""
    target, tls = resolve_tls(url, tls)
    options = channel_args(tls=tls, **kwargs)
    if tls is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, tls.credentials(), options=options)
    if not api_key and not metadata:
        return channel
    return grpc.intercept_channel(channel, SyncAuthInterceptor(api_key, metadata))


def aio_channel(
    url: str, tls: TlsOptions | None = None, api_key: str | None = None, **kwargs: Any
) -> grpc.aio.Channel:
    target, tls = resolve_tls(url, tls)
    options = channel_args(tls=tls, **kwargs)
    interceptors = aio_interceptors(api_key) or None
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(
        target, tls.credentials(), options=options, interceptors=interceptors
    )
