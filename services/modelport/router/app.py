"""The router's composition root: discovery → replica table → balancer → server.

`RouterApp` owns the background tasks (discovery, policy watch, index polls)
and the gRPC server; the tests build one from its parts, `build` from
`RouterSettings` (what `modelport serve router` runs through the common runtime).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from modelport.common.access import AccessControl
from modelport.common.access_config import build_access_control
from modelport.common.histograms import BucketHistogram
from modelport.common.runtime import run_service
from modelport.common.server import GrpcServer, ServerOptions
from modelport.common.tls import ChannelMaker, ClientTlsFiles, ReloadingSslContext
from modelport.proto.modelport.router.v1 import router_pb2, router_pb2_grpc
from modelport.router import discovery as discovery_sources
from modelport.router import pool_watch, wire
from modelport.router.admin import RouterAdminServicer
from modelport.router.codec import ProtobufCodec
from modelport.router.discovery import Discovery
from modelport.router.fastpath import FastPath, choose
from modelport.router.fleet import Fleet
from modelport.router.forwarding import Router
from modelport.router.grpc_backends import GrpcTransport
from modelport.router.model_health import ModelHealth
from modelport.router.openai.http import OpenAIServer
from modelport.router.openai.router_backend import RouterGenerationBackend
from modelport.router.openai.service import OpenAIService
from modelport.router.placement import PoolPlacer
from modelport.router.policies import Planner, PolicySource, RoutingState, StaticPolicySource
from modelport.router.pool_routing import POOL_MODEL, PoolRouting
from modelport.router.pool_watch import ReplicaWatcher
from modelport.router.replicas import Endpoint, Replica, ReplicaTable
from modelport.router.scale_from_zero import ScaleFromZero
from modelport.router.scaler import SERVICE_NAME as SCALER_SERVICE
from modelport.router.scaler import ExternalScalerServicer
from modelport.router.scaler import register as register_scaler
from modelport.router.servicer import SERVICE, RouterServicer, method_handlers
from modelport.router.settings import RouterSettings
from modelport.router.versions import VersionPoller

log = logging.getLogger(__name__)

ADMIN_SERVICE = router_pb2.DESCRIPTOR.services_by_name["RouterAdmin"].full_name


@dataclass(frozen=True)
class ScalingSettings:
    """Models held at zero replicas (see `scale_from_zero`) and how."""

    models: tuple[str, ...] = ()
    queue_size: int = 256
    max_hold_seconds: float = 120.0
    idle_seconds: float = 300.0


class RouterApp:
    def __init__(
        self,
        discovery: Discovery,
        policies: PolicySource | None = None,
        options: ServerOptions | None = None,
        index_interval: float = 5.0,
        metrics: bool = False,
        multiplex: bool = False,
        scaling: ScalingSettings | None = None,
        upstream_tls: ClientTlsFiles | None = None,
        access: AccessControl | None = None,
        rotation_check_seconds: float = 5.0,
        http_port: int = -1,
        stream_relay: bool = True,
        fast_path: Path | None = None,
        grace_seconds: float = 25.0,
    ) -> None:
        self.rotation_check_seconds = rotation_check_seconds
        # Identity, policy and quotas on every RPC (None: open, as on a laptop).
        self.access = access
        self.options = options or ServerOptions(host="127.0.0.1", port=0)
        self.discovery = discovery
        self.policies = policies or StaticPolicySource()
        self.table = ReplicaTable()
        self.model_health = ModelHealth(self.table, lambda m, r: self.server.set_serving(m, r))
        self.scaling: ScaleFromZero | None = None
        if scaling is not None and scaling.models:
            self.scaling = ScaleFromZero(
                self.table,
                scaling.models,
                scaling.queue_size,
                scaling.max_hold_seconds,
                scaling.idle_seconds,
            )
        self.transport = GrpcTransport(
            self.options.max_message_bytes,
            multiplex=multiplex,
            tls=upstream_tls,
            relay_streams=stream_relay,
        )
        latency = None
        self.latency_histogram: BucketHistogram | None = None
        if metrics:
            from modelport.router import telemetry

            self.latency_histogram = telemetry.latency_histogram()
            latency = telemetry.recorder(self.latency_histogram)
        # Aliases move once a replica serves the new version (see `Planner`).
        planner = Planner(served=lambda model, version: bool(self.table.candidates(model, version)))
        self.table.on_change = self._table_changed
        self.router = Router(
            self.table,
            planner,
            self.transport,
            ProtobufCodec(),
            scaling=self.scaling,
            latency=latency,
        )
        self.placer = PoolPlacer()
        self.router.pool = PoolRouting(self.table, self.placer, pool_watch.prefetch)
        self.poller = VersionPoller(
            self.table,
            self.transport.served_versions,
            index_interval,
            urgent=self._awaited if self.scaling is not None else None,
        )
        # Replicas push what they serve; the poller reads those that do not.
        self.pool_watcher = ReplicaWatcher(
            self.table, self.placer, self.poller.watch,
            on_load=self.scaling.observe_load if self.scaling is not None else None,
        )  # fmt: skip
        self.transport.loads = self.router.balancer.loads
        self.fleet = Fleet(self.router, self.transport)
        self.servicer = RouterServicer(self.router, self.fleet)
        self.http: OpenAIServer | None = None
        self.http_tls: ReloadingSslContext | None = None
        if http_port >= 0:
            backend = RouterGenerationBackend(self.router, self.fleet)
            gate = access.gate if access is not None else None
            self.http = OpenAIServer(OpenAIService(backend), gate=gate)
        self.http_port = http_port
        # With the fast path (the `modelport-fastpath` binary) in front, it listens on
        # the public address and this server on a private loopback port behind it.
        self.fastpath: FastPath | None = None
        server_options = self.options
        if fast_path is not None:
            self.fastpath = FastPath(
                fast_path, self.router, max_message_bytes=self.options.max_message_bytes,
                grace_seconds=grace_seconds, latency=self.latency_histogram,
            )  # fmt: skip
            server_options = dataclasses.replace(
                self.options, host="127.0.0.1", port=0, reuse_port=False,
                listening_label="gRPC behind the fast path",
            )  # fmt: skip
        self.server = GrpcServer(server_options, access=access)
        self.metrics = metrics
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self.port = 0

    def _table_changed(self) -> None:
        self.router.planner.replicas_changed()
        if self.fastpath is not None:
            self.fastpath.changed()
        if self.scaling is not None:
            self.scaling.on_table_change()

    def _awaited(self, replica: Replica) -> bool:
        """Requests are held for a model this replica will serve but does not yet
        (polled replicas only: the others push the moment they serve it)."""
        assert self.scaling is not None
        held = self.scaling.queue.models()
        return any(m in replica.models and not self.scaling.has_replica(m) for m in held)

    def _on_policies(self, state: RoutingState) -> None:
        self.router.planner.update(state)
        if self.fastpath is not None:
            self.fastpath.changed()
        if self.router.pool is not None:
            self.router.pool.on_state(state)

    def on_endpoints(self, endpoints: list[Endpoint]) -> None:
        added, removed = self.table.apply(endpoints)
        for replica in added:
            self.transport.open(replica)
            self.pool_watcher.watch(replica)
            self.fleet.shared_memory.joined(replica)
            log.info("replica %s joined (%s)", replica.address, ", ".join(sorted(replica.models)))
        for replica in removed:
            self.poller.forget(replica)
            self.router.balancer.loads.forget(replica.address)
            self.pool_watcher.forget(replica.address)
            task = asyncio.get_running_loop().create_task(self.transport.close(replica))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            log.info("replica %s left", replica.address)

    async def start(self) -> int:
        handlers = method_handlers(self.servicer)
        self.server.add_service(SERVICE, lambda s: s.add_method_handlers(SERVICE, handlers))
        admin = RouterAdminServicer(self.router, self.pool_watcher.reports, self.pool_watcher.loads)
        self.server.add_service(
            ADMIN_SERVICE, lambda s: router_pb2_grpc.add_RouterAdminServicer_to_server(admin, s)
        )
        if self.scaling is not None:
            scaler = ExternalScalerServicer(self.scaling)
            self.server.add_service(SCALER_SERVICE, lambda s: register_scaler(s, scaler))
        if self.metrics:
            from modelport.router import telemetry

            telemetry.install(self.router)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(
                self._keep_running("discovery", self.discovery.run, self.on_endpoints)
            ),
            loop.create_task(self._keep_running("policies", self.policies.run, self._on_policies)),
            loop.create_task(self._redial_on_rotation(self.rotation_check_seconds)),
            loop.create_task(self.model_health.run()),
        ]
        if self.scaling is not None:
            self._tasks.append(loop.create_task(self.scaling.run_idle_checks()))
        self.port = await self.server.start()
        if self.fastpath is not None:
            private = f"127.0.0.1:{self.port}"
            self.port = await self.fastpath.start(self.options.host, self.options.port, private)
        if self.http is not None:
            tls = self.options.tls
            self.http_tls = ReloadingSslContext(tls) if tls else None
            self.http_port = await self.http.start(
                self.options.host, self.http_port, self.http_tls.context if self.http_tls else None
            )
            log.info("OpenAI-compatible API on %s:%d/v1", self.options.host, self.http_port)
        return self.port

    async def _redial_on_rotation(self, check_seconds: float = 5.0) -> None:
        """Rotated client certificates: every replica gets a new channel; rotated
        server files: the HTTPS port's next handshakes use them (gRPC's reload itself)."""
        while True:
            await asyncio.sleep(check_seconds)
            if self.http_tls is not None:
                self.http_tls.check()
            if self.transport.rotated():
                log.info("client certificate changed: new channels to every replica")
                for replica in list(self.table.replicas.values()):
                    task = asyncio.get_running_loop().create_task(self.transport.redial(replica))
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)

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
        if self.fastpath is not None:  # the front first: it stops taking calls, ends its own
            await self.fastpath.stop(grace)
        if self.http is not None:
            await self.http.stop()
        if self.scaling is not None:
            self.scaling.close()  # held requests: UNAVAILABLE, another router may take them
        await self.server.drain(grace)
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.poller.close()
        await self.pool_watcher.close()
        if self.router.pool is not None:
            await self.router.pool.close()
        await self.router.close()
        for replica in list(self.table.replicas.values()):
            await self.transport.close(replica, grace=0)
        await asyncio.gather(*self._closing, return_exceptions=True)


def build_discovery(settings: RouterSettings) -> Discovery:
    if settings.discovery == "static":
        endpoints = [discovery_sources.parse_endpoint(e) for e in settings.endpoints]
        endpoints += [Endpoint(POOL_MODEL, address) for address in settings.pool_endpoints]
        return discovery_sources.StaticDiscovery(endpoints, settings.endpoints_file)
    if settings.discovery == "dns":
        targets = [discovery_sources.parse_dns_target(t) for t in settings.dns_names]
        return discovery_sources.DnsDiscovery(targets, interval=settings.dns_interval)
    from modelport.router.discovery_kubernetes import KubernetesDiscovery

    return KubernetesDiscovery(namespace=settings.namespace, label_selector=settings.label_selector)


def build(settings: RouterSettings) -> RouterApp:
    fast_path = choose(settings)
    if settings.fast_path != "off":
        log.info("fast path %s: %s", "on" if fast_path.binary else "off", fast_path.reason)
    policies: PolicySource | None = None
    if settings.registry:
        from modelport.router.registry_policies import RegistryPolicySource

        policies = RegistryPolicySource(
            settings.registry, channels=ChannelMaker(settings.upstream_tls)
        )
    return RouterApp(
        build_discovery(settings),
        policies,
        settings.server_options(),
        index_interval=settings.index_interval,
        metrics=settings.metrics_port >= 0,
        multiplex=settings.multiplex,
        scaling=ScalingSettings(
            settings.hold_models,
            settings.hold_queue_size,
            settings.max_hold_seconds,
            settings.idle_seconds,
        ),
        upstream_tls=settings.upstream_tls,
        access=build_access_control(
            "router", settings, raw_model=lambda request: wire.routing_fields(request)[0]
        ),
        http_port=settings.http_port,
        stream_relay=settings.stream_relay,
        fast_path=fast_path.binary,
        grace_seconds=settings.grace_seconds,
    )


def run(settings: RouterSettings) -> None:
    run_service("router", settings, build)
