"""Building, running and draining a grpc.aio server, the same way for every service.

Each service hands its servicers to `GrpcServer`; this module adds the standard
`grpc.health.v1` service and reflection, applies message-size and keepalive
options, and owns the drain sequence: readiness false, stop accepting, let
in-flight calls finish within the grace period.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

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
    ) -> None:
        self.options = options
        self.server = grpc.aio.server(
            options=options.channel_args(), interceptors=list(interceptors)
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names: list[str] = [
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        ]
        self.port = 0
        self.extra_ports: list[int] = []

    def add_service(self, full_name: str, register: Callable[[grpc.aio.Server], None]) -> None:
        """Register a servicer; `full_name` is its proto service name (for reflection)."""
        register(self.server)
        self._service_names.append(full_name)

    async def start(self) -> int:
        reflection.enable_server_reflection(
            [*self._service_names, reflection.SERVICE_NAME], self.server
        )
        address = f"{self.options.host}:{self.options.port}"
        if ":" in self.options.host and not self.options.host.startswith("["):
            address = f"[{self.options.host}]:{self.options.port}"
        if self.options.tls is not None:
            self.port = self.server.add_secure_port(address, self.options.tls.server_credentials())
        else:
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"could not bind gRPC port {address}")
        for extra in self.options.extra_addresses:
            self.extra_ports.append(self.server.add_insecure_port(extra))
        await self.server.start()
        mode = "plaintext"
        if self.options.tls is not None:
            mode = "mutual TLS" if self.options.tls.ca_file is not None else "TLS"
        log.info("gRPC listening on %s:%d (%s)", self.options.host, self.port, mode)
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

    async def wait(self) -> None:
        await self.server.wait_for_termination()
