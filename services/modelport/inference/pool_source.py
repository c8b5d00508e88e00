"""The pool's models come from the registry: its pool placement and versions, over gRPC."""

from __future__ import annotations

import grpc

from modelport.errors import NotFound, Unavailable
from modelport.inference.artifact_cache import Artifact, ArtifactCache
from modelport.inference.pool import PoolVersion
from modelport.inference.registry_follower import fetch_artifact
from modelport.proto.modelport.registry.v1 import registry_pb2 as pb
from modelport.proto.modelport.registry.v1 import registry_pb2_grpc


class RegistryPoolSource:
    def __init__(self, address: str, alias: str = "production") -> None:
        self.address = address
        self.alias = alias
        self._channel: grpc.aio.Channel | None = None
        self._stub: registry_pb2_grpc.ModelRegistryAsyncStub | None = None

    def _registry(self) -> registry_pb2_grpc.ModelRegistryAsyncStub:
        if self._stub is None:  # opened on the event loop that serves
            self._channel = grpc.aio.insecure_channel(self.address)
            self._stub = registry_pb2_grpc.ModelRegistryStub(self._channel)  # type: ignore[assignment]
        assert self._stub is not None
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def resolve(self, name: str, version: int | None) -> PoolVersion:
        stub = self._registry()
        ref = f"{name}:{version}" if version else f"{name}@{self.alias}"
        try:
            placement = await stub.GetPoolPlacement(
                pb.GetPoolPlacementRequest(model=name), timeout=10
            )
            if not placement.pooled:
                raise NotFound(
                    f"model '{name}' is not served by the pool: the registry does not mark it "
                    f"pooled (modelport models pool {name} --priority N)"
                )
            found = await stub.GetVersion(pb.GetVersionRequest(ref=ref), timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"model '{name}': {exc.details()}") from None
            raise Unavailable(
                f"model '{name}': the registry at {self.address} is unreachable "
                f"({exc.code().name}); models already loaded keep serving"
            ) from None
        artifact = Artifact(name, found.version, found.sha256)
        estimate = placement.memory_bytes or found.size_bytes
        return PoolVersion(artifact, placement.priority, estimate)

    async def fetch(self, artifact: Artifact, cache: ArtifactCache) -> None:
        await fetch_artifact(self._registry(), cache, artifact)
