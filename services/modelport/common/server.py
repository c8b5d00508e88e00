"""Building, running and draining a grpc.aio server, the same way for every service.

Each service hands its servicers to `GrpcServer`; this module adds the standard
`grpc.health.v1` service and reflection, puts every method of every service
inside the error boundary (`common.grpc_errors`), applies message-size,
keepalive and TLS options, and owns the drain sequence: readiness false, stop
accepting, let in-flight calls finish within the grace period.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from modelport.common.access import AccessControl
from modelport.common.grpc_errors import GuardedRegistrar, Handlers
from modelport.common.tls import TlsFiles

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServerOptions:
    host: str = "0.0.0.0"
    port: int = 0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # Several processes may bind the same port (SO_REUSEPORT) and share load.
    reuse_port: bool = False
    # More addresses to listen on, e.g. a private loopback port for siblings
    # (plaintext: loopback only, inside the pod).
    extra_addresses: Sequence[str] = ()
    # TLS on the main address (see common/tls.py); None: plaintext.
    tls: TlsFiles | None = None
    # gRPC server reflection (lets grpcurl list and call services without the protos).
    reflection: bool = True
    # How the log names this port ("gRPC listening" is what launchers look for).
    listening_label: str = "gRPC listening"
    extra: Sequence[tuple[str, int | str]] = field(default_factory=tuple)

    def channel_args(self) -> list[tuple[str, int | str]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 1 if self.reuse_port else 0),
            # Let clients keep idle connections alive through proxies.
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            *self.extra,
        ]


class GrpcServer:
    """A grpc.aio server with health, reflection and a graceful drain."""

    def __init__(
        self,
        options: ServerOptions,
        *,
        interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
        access: AccessControl | None = None,
    ) -> None:
        self.options = options
        # Identity, policy, quotas and audit around every handler (None: none).
        self.access = access
        self.server = grpc.aio.server(
            options=options.channel_args(), interceptors=list(interceptors)
        )
        # Every method served, by full path ("/package.Service/Method"): all guarded.
        self.methods: Handlers = {}
        self._service_names: list[str] = []
        self.health = health.aio.HealthServicer()
        self.add_service(
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            lambda s: health_pb2_grpc.add_HealthServicer_to_server(self.health, s),
        )
        self.port = 0
        self.extra_ports: list[int] = []

    def add_service(self, full_name: str, register: Callable[[Any], None]) -> None:
        """Register a service: `register` gets a `GuardedRegistrar` to add its handlers to
        (a generated `add_…Servicer_to_server(servicer, s)`, or `s.add_method_handlers`).
        `full_name` is its proto service name (for reflection)."""
        wrap = self.access.wrap if self.access is not None else None
        registrar = GuardedRegistrar(self.server, self._record, wrap)
        register(registrar)
        registrar.close()
        self._service_names.append(full_name)

    def methods_by_service(self) -> dict[str, list[str]]:
        """Service name -> the names of its methods, as registered."""
        out: dict[str, list[str]] = {}
        for path in self.methods:
            service, _, method = path.lstrip("/").partition("/")
            out.setdefault(service, []).append(method)
        return out

    def _record(self, service: str, handlers: Handlers) -> None:
        for name, handler in handlers.items():
            self.methods[f"/{service}/{name}"] = handler

    async def start(self) -> int:
        if self.options.reflection:
            names = [*self._service_names, reflection.SERVICE_NAME]
            self.add_service(
                reflection.SERVICE_NAME,
                lambda s: reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
                    reflection.aio.ReflectionServicer(names), s
                ),
            )
        address = f"{self.options.host}:{self.options.port}"
        if ":" in self.options.host and not self.options.host.startswith("["):
            address = f"[{self.options.host}]:{self.options.port}"
        if not self.options.reuse_port:
            check_port_free(self.options.host, self.options.port, f"gRPC port {address}")
        try:
            if self.options.tls is not None:
                credentials = self.options.tls.server_credentials()
                self.port = self.server.add_secure_port(address, credentials)
            else:
                self.port = self.server.add_insecure_port(address)
            for extra in self.options.extra_addresses:
                self.extra_ports.append(self.server.add_insecure_port(extra))
        except RuntimeError as exc:  # grpc's "Failed to bind to address …"
            raise OSError(f"cannot bind gRPC port {address}: {exc}") from None
        if self.port == 0:
            raise OSError(f"could not bind gRPC port {address}")
        await self.server.start()
        mode = "plaintext"
        if self.options.tls is not None:
            mode = "mutual TLS" if self.options.tls.ca_file is not None else "TLS"
        log.info(
            "%s on %s:%d (%s)", self.options.listening_label, self.options.host, self.port, mode
        )
        return self.port

    async def set_serving(self, service: str, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set(service, status)

    async def drain(self, grace_seconds: float) -> None:
        """Readiness false for every service, then stop within the grace period."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_seconds)


def check_port_free(host: str, port: int, what: str) -> None:
    """Refuse a port some process holds, in words, before grpc's bind logs a
    C-level error and raises a bare RuntimeError (port 0 is always free)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds
        try:
            probe.bind((host.strip("[]") or "0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(f"{what} is in use by another process") from None
