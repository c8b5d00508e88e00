"""Composition root of the registry: settings → store → servicer → gRPC server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from modelport.common.access_config import build_access_control
from modelport.common.encryption import sealing_of
from modelport.common.runtime import run_service
from modelport.common.server import GrpcServer
from modelport.errors import InvalidInput
from modelport.registry import dataset_servicer
from modelport.registry.audit_log import DatabaseAuditLog
from modelport.registry.blob_backends import BlobBackend, S3Backend
from modelport.registry.dataset_servicer import DatasetServicer
from modelport.registry.datasets import DatasetStore
from modelport.registry.derive_executor import (
    DeriveExecutor,
    KubernetesExecutor,
    KubernetesJobSettings,
    LocalExecutor,
)
from modelport.registry.servicer import SERVICE_NAME, RegistryServicer, register
from modelport.registry.settings import RegistrySettings
from modelport.registry.store import RegistryStore
from modelport.registry.upload_ledger import DatabaseUploadLedger

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
        self.executor: DeriveExecutor | None = None

    @property
    def address(self) -> str:
        assert self.grpc is not None
        return f"{self.settings.host}:{self.grpc.port}"

    @property
    def local_address(self) -> str:
        """Where a worker process on this machine reaches the registry."""
        assert self.grpc is not None
        host = self.settings.host
        return f"{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{self.grpc.port}"

    async def start(self) -> int:
        settings = self.settings
        self.store = await asyncio.to_thread(
            RegistryStore.open,
            settings.database,
            settings.blob_dir,
            max_upload_bytes=settings.max_upload_mb * 1024 * 1024,
            stale_upload_seconds=settings.stale_upload_minutes * 60,
            blob_backend=blob_backend(settings),
            sealing=sealing_of(settings.kek_file),
            scratch_dir=settings.scratch_dir,
        )
        audit_log = DatabaseAuditLog(self.store.engine)
        self.executor = make_executor(settings, self.store, lambda: self.local_address)
        self.servicer = RegistryServicer(
            self.store, asyncio.get_running_loop(), self.executor, audit_log
        )
        datasets = DatasetServicer(
            DatasetStore(
                self.store.engine,
                settings.blob_dir,
                max_upload_bytes=settings.max_upload_mb * 1024 * 1024,
                backend=blob_backend(settings, "datasets"),
            )
        )
        access = build_access_control(
            "registry",
            settings,
            audit_sink=audit_log,
            upload_ledger=DatabaseUploadLedger(self.store.engine),
        )
        self.grpc = GrpcServer(settings.server_options(), access=access)
        servicer = self.servicer
        self.grpc.add_service(SERVICE_NAME, lambda server: register(server, servicer))
        self.grpc.add_service(
            dataset_servicer.SERVICE_NAME,
            lambda server: dataset_servicer.register(server, datasets),
        )
        port = await self.grpc.start()
        await self.grpc.set_serving("", True)
        await self.grpc.set_serving(SERVICE_NAME, True)
        await self.grpc.set_serving(dataset_servicer.SERVICE_NAME, True)
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
        if self.executor is not None:
            await self.executor.close()
        if self.grpc is not None:
            await self.grpc.drain(grace)
        if self.store is not None:
            self.store.close()


def blob_backend(settings: RegistrySettings, subfolder: str = "") -> BlobBackend | None:
    """None keeps blobs in --blob-dir; s3://… keeps them in a bucket (datasets under
    their own subfolder, apart from the model blobs the store's sweep may delete)."""
    if not settings.blob_store:
        return None
    url = settings.blob_store.rstrip("/") + (f"/{subfolder}" if subfolder else "")
    return S3Backend(url, endpoint=settings.s3_endpoint)


def make_executor(
    settings: RegistrySettings, store: RegistryStore, address: Callable[[], str]
) -> DeriveExecutor | None:
    if settings.derive_executor == "none":
        return None
    if settings.derive_executor == "local":
        return LocalExecutor(store.jobs, address, settings.derive_workers)
    missing = [
        flag
        for flag, value in (
            ("--derive-namespace", settings.derive_namespace),
            ("--derive-image", settings.derive_image),
            ("--derive-registry-address", settings.derive_registry_address),
        )
        if not value
    ]
    if missing:
        raise InvalidInput(f"--derive-executor kubernetes needs {', '.join(missing)}")
    job_settings = KubernetesJobSettings(
        namespace=settings.derive_namespace,
        image=settings.derive_image,
        registry_address=settings.derive_registry_address,
        gpu_node_selector=_pairs(settings.derive_gpu_node_selector, "--derive-gpu-node-selector"),
        labels=_pairs(settings.derive_job_labels, "--derive-job-label"),
        gpu_resource=settings.derive_gpu_resource,
        memory_limit=settings.derive_memory_limit,
    )
    return KubernetesExecutor(store.jobs, job_settings)


def _pairs(items: tuple[str, ...], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{flag} '{item}': expected KEY=VALUE")
        pairs[key] = value
    return pairs


def run(settings: RegistrySettings) -> None:
    run_service("registry", settings, RegistryServer)
