"""Sibling worker processes of one inference server, over their private loopback ports.

The gRPC side of `fleet.Siblings`: calls carry `x-modelport-peer` metadata, so
the sibling acts locally and does not fan out again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import grpc

from modelport.errors import Unavailable
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pbg

PEER_KEY = "x-modelport-peer"
PEER_METADATA = ((PEER_KEY, "1"),)


def from_peer(context: grpc.aio.ServicerContext) -> bool:
    return any(key == PEER_KEY for key, _ in context.invocation_metadata() or ())


class PeerGroup:
    def __init__(self) -> None:
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[pbg.GRPCInferenceServiceStub] = []

    def __bool__(self) -> bool:
        return bool(self._stubs)

    def connect(self, addresses: Iterable[str]) -> None:
        for address in addresses:
            channel = grpc.aio.insecure_channel(address)
            self._channels.append(channel)
            self._stubs.append(pbg.GRPCInferenceServiceStub(channel))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))

    async def _each(self, method: str, request: Any) -> list[Any]:
        calls = [
            getattr(s, method)(request, metadata=PEER_METADATA, timeout=600) for s in self._stubs
        ]
        try:
            return list(await asyncio.gather(*calls))
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(f"a sibling worker failed {method}: {exc.details()}") from None

    async def load(self, name: str) -> None:
        await self._each("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name=name))

    async def unload(self, name: str) -> None:
        await self._each("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name=name))

    async def statistics(self, name: str, version: str) -> list[pb.ModelStatistics]:
        request = pb.ModelStatisticsRequest(name=name, version=version)
        return [s for r in await self._each("ModelStatistics", request) for s in r.model_stats]
