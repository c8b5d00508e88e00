"""The replicas behind the router, seen as one server: per-model questions go to a
replica serving the version, fleet-wide ones are gathered from all and merged.

Transport-free: control calls go through `ControlTransport` (gRPC in
`grpc_backends.GrpcTransport`). Messages are the OIP ones, unchanged, so a
replica's answer reaches the caller as the replica gave it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from modelport import errors
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.router.forwarding import Router
from modelport.router.replicas import Replica
from modelport.router.shared_memory import SharedMemoryRegions

INDEX_TIMEOUT_SECONDS = 5.0


class ControlTransport(Protocol):
    async def call(self, replica: Replica, method: str, request: Any, timeout: float = 10.0) -> Any:
        """One typed OIP call (ModelMetadata, RepositoryIndex, …) on `replica`."""
        ...


class Fleet:
    def __init__(self, router: Router, transport: ControlTransport) -> None:
        self._router = router
        self._transport = transport
        self._table = router.table
        # System shared memory regions, registered on every replica (same host only).
        self.shared_memory = SharedMemoryRegions(router.table, transport)

    def _replica_for(self, model: str, version_ref: str) -> tuple[Replica, str]:
        version = self._router.planner.resolve(model, version_ref)
        pool = self._router.pool
        if pool is not None and pool.takes(model, version):
            return pool.replica_for(model, version), version
        return self._router.balancer.pick(model, version), version

    async def model_metadata(self, name: str, version_ref: str) -> pb.ModelMetadataResponse:
        replica, version = self._replica_for(name, version_ref)
        ask = pb.ModelMetadataRequest(name=name, version=version)
        return await self._transport.call(replica, "ModelMetadata", ask)

    async def model_config(self, name: str, version_ref: str) -> pb.ModelConfigResponse:
        replica, version = self._replica_for(name, version_ref)
        ask = pb.ModelConfigRequest(name=name, version=version)
        return await self._transport.call(replica, "ModelConfig", ask)

    async def model_ready(self, name: str, version_ref: str) -> bool:
        try:
            replica, version = self._replica_for(name, version_ref)
        except (errors.NotFound, errors.Unavailable):
            return False
        ask = pb.ModelReadyRequest(name=name, version=version)
        answer = await self._transport.call(replica, "ModelReady", ask)
        return bool(answer.ready)

    def server_ready(self) -> bool:
        """Some replica takes traffic and has reported what it serves."""
        return any(r.takes_traffic() and r.versions for r in self._table.replicas.values())

    async def statistics(self, name: str, version_ref: str) -> pb.ModelStatisticsResponse:
        if name:
            replica, version = self._replica_for(name, version_ref)
            ask = pb.ModelStatisticsRequest(name=name, version=version)
            return await self._transport.call(replica, "ModelStatistics", ask)
        # Every model: one replica per model, each asked about that model.
        merged = pb.ModelStatisticsResponse()
        for model in sorted(self._table.known_models()):
            try:
                replica = self._router.balancer.pick(model, "")
            except errors.ModelportError:
                continue
            answer = await self._transport.call(
                replica, "ModelStatistics", pb.ModelStatisticsRequest(name=model)
            )
            merged.model_stats.extend(answer.model_stats)
        return merged

    async def index(self, request: pb.RepositoryIndexRequest) -> pb.RepositoryIndexResponse:
        """Every replica's index merged: a version READY anywhere is READY here."""
        replicas = [r for r in self._table.replicas.values() if r.takes_traffic()]
        answers = await asyncio.gather(
            *(self._transport.call(r, "RepositoryIndex", request, INDEX_TIMEOUT_SECONDS)
              for r in replicas),
            return_exceptions=True,
        )  # fmt: skip
        entries: dict[tuple[str, str], Any] = {}
        for answer in answers:
            if isinstance(answer, BaseException):
                continue
            for entry in answer.models:
                key = (entry.name, entry.version)
                if key not in entries or entry.state == "READY":
                    entries[key] = entry
        # A replica that merely has a model on disk reports it without a version
        # ("unloaded"); behind the router that says nothing when others serve it.
        served = {name for (name, _), e in entries.items() if e.state == "READY"}
        merged = pb.RepositoryIndexResponse()
        merged.models.extend(
            entries[key] for key in sorted(entries) if key[1] or key[0] not in served
        )
        return merged
