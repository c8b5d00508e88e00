"""The router's composition root: discovery → replica table → balancer → server.

`RouterApp` owns the background tasks (discovery, policy watch, index polls)
and the gRPC server; the tests build one from its parts, `build` from
`RouterSettings` (what `modelport serve router` runs through the common runtime).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from modelport.common.runtime import run_service
from modelport.common.server import GrpcServer, ServerOptions
from modelport.proto.modelport.router.v1 import router_pb2, router_pb2_grpc
from modelport.router import discovery as discovery_sources
from modelport.router.admin import RouterAdminServicer
from modelport.router.codec import ProtobufCodec
from modelport.router.discovery import Discovery
from modelport.router.fleet import Fleet
from modelport.router.forwarding import Router
from modelport.router.grpc_backends import GrpcTransport
from modelport.router.policies import Planner, PolicySource, StaticPolicySource
from modelport.router.replicas import Endpoint, ReplicaTable
from modelport.router.servicer import SERVICE, RouterServicer, method_handlers
from modelport.router.settings import RouterSettings
from modelport.router.versions import VersionPoller

log = logging.getLogger(__name__)

ADMIN_SERVICE = router_pb2.DESCRIPTOR.services_by_name["RouterAdmin"].full_name


class RouterApp:
    def __init__(
        self,
        discovery: Discovery,
        policies: PolicySource | None = None,
        options: ServerOptions | None = None,
        index_interval: float = 5.0,
        metrics: bool = False,
        multiplex: bool = False,
    ) -> None:
        self.options = options or ServerOptions(host="127.0.0.1", port=0)
        self.discovery = discovery
        self.policies = policies or StaticPolicySource()
        self.table = ReplicaTable()
        self.transport = GrpcTransport(self.options.max_message_bytes, multiplex=multiplex)
        latency = None
        if metrics:
            from modelport.router import telemetry

            latency = telemetry.recorder(telemetry.latency_histogram())
        self.router = Router(
            self.table, Planner(), self.transport, ProtobufCodec(), latency=latency
        )
        self.poller = VersionPoller(self.table, self.transport.served_versions, index_interval)
        self.servicer = RouterServicer(self.router, Fleet(self.router, self.transport))
        self.server = GrpcServer(self.options)
        self.metrics = metrics
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self.port = 0

    def on_endpoints(self, endpoints: list[Endpoint]) -> None:
        added, removed = self.table.apply(endpoints)
        for replica in added:
            self.transport.open(replica)
            self.poller.watch(replica)
            log.info("replica %s joined (%s)", replica.address, ", ".join(sorted(replica.models)))
        for replica in removed:
            self.poller.forget(replica)
            task = asyncio.get_running_loop().create_task(self.transport.close(replica))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            log.info("replica %s left", replica.address)

    async def start(self) -> int:
        handlers = method_handlers(self.servicer)
        self.server.add_service(SERVICE, lambda s: s.add_method_handlers(SERVICE, handlers))
        admin = RouterAdminServicer(self.router)
        self.server.add_service(
            ADMIN_SERVICE, lambda s: router_pb2_grpc.add_RouterAdminServicer_to_server(admin, s)
        )
        if self.metrics:
            from modelport.router import telemetry

            telemetry.install(self.router)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(
                self._keep_running("discovery", self.discovery.run, self.on_endpoints)
            ),
            loop.create_task(
                self._keep_running("policies", self.policies.run, self.router.planner.update)
            ),
        ]
        self.port = await self.server.start()
        return self.port

    async def _keep_running(self, what: str, run: object, callback: object) -> None:
        """Restart a background source that fails; its last report stays in force."""
        while True:
            try:
                await run(callback)  # type: ignore[operator]
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s source failed; restarting in 1 s", what)
                await asyncio.sleep(1.0)

    async def stop(self, grace: float = 5.0) -> None:
        await self.server.drain(grace)
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.poller.close()
        await self.router.close()
        for replica in list(self.table.replicas.values()):
            await self.transport.close(replica, grace=0)
        await asyncio.gather(*self._closing, return_exceptions=True)


def build_discovery(settings: RouterSettings) -> Discovery:
    if settings.discovery == "static":
        endpoints = [discovery_sources.parse_endpoint(e) for e in settings.endpoints]
        return discovery_sources.StaticDiscovery(endpoints, settings.endpoints_file)
    if settings.discovery == "dns":
        targets = [discovery_sources.parse_dns_target(t) for t in settings.dns_names]
        return discovery_sources.DnsDiscovery(targets, interval=settings.dns_interval)
    from modelport.router.discovery_kubernetes import KubernetesDiscovery

    return KubernetesDiscovery(namespace=settings.namespace, label_selector=settings.label_selector)


def build(settings: RouterSettings) -> RouterApp:
    policies: PolicySource | None = None
    if settings.registry:
        from modelport.router.registry_policies import RegistryPolicySource

        policies = RegistryPolicySource(settings.registry)
    return RouterApp(
        build_discovery(settings),
        policies,
        settings.server_options(),
        index_interval=settings.index_interval,
        metrics=settings.metrics_port >= 0,
        multiplex=settings.multiplex,
    )


def run(settings: RouterSettings) -> None:
    run_service("router", settings, build)
