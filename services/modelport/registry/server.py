"""Composition root of the registry: settings → store → servicer → gRPC server."""

from __future__ import annotations

import asyncio
import logging

from modelport.common.runtime import run_service
from modelport.common.server import GrpcServer
from modelport.registry.servicer import SERVICE_NAME, RegistryServicer, register
from modelport.registry.settings import RegistrySettings
from modelport.registry.store import RegistryStore

__all__ = ["RegistryServer", "RegistrySettings", "run"]

log = logging.getLogger(__name__)


class RegistryServer:
    """The registry's gRPC server; `start` returns the bound port."""

    def __init__(self, settings: RegistrySettings) -> None:
        self.settings = settings
        self.store: RegistryStore | None = None
        self.servicer: RegistryServicer | None = None
        self.grpc: GrpcServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        assert self.grpc is not None
        return f"{self.settings.host}:{self.grpc.port}"

    async def start(self) -> int:
        settings = self.settings
        self.store = await asyncio.to_thread(
            RegistryStore.open,
            settings.database,
            settings.blob_dir,
            max_upload_bytes=settings.max_upload_mb * 1024 * 1024,
            stale_upload_seconds=settings.stale_upload_minutes * 60,
        )
        self.servicer = RegistryServicer(self.store, asyncio.get_running_loop())
        self.grpc = GrpcServer(settings.server_options())
        servicer = self.servicer
        self.grpc.add_service(SERVICE_NAME, lambda server: register(server, servicer))
        port = await self.grpc.start()
        await self.grpc.set_serving("", True)
        await self.grpc.set_serving(SERVICE_NAME, True)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_periodically())
        return port

    async def _sweep_periodically(self) -> None:
        """Abandoned uploads of any replica sharing the blob volume go eventually."""
        assert self.store is not None
        while True:
            await asyncio.sleep(self.settings.sweep_interval_seconds)
            try:
                await asyncio.to_thread(self.store.sweep, self.settings.stale_upload_minutes * 60)
            except Exception:
                log.exception("blob sweep failed; trying again later")

    async def stop(self, grace: float = 5.0) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.servicer is not None:
            self.servicer.close()
        if self.grpc is not None:
            await self.grpc.drain(grace)
        if self.store is not None:
            self.store.close()


def run(settings: RegistrySettings) -> None:
    run_service("registry", settings, RegistryServer)
