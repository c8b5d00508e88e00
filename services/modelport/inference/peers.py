"""Sibling worker processes of one inference server, over their private loopback ports.

The gRPC side of `fleet.Siblings`: calls carry `x-modelport-peer` metadata, so
the sibling acts locally and does not fan out again.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from typing import Any

import grpc

from modelport.errors import ModelportError, Unavailable
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pbg

PEER_KEY = "x-modelport-peer"
PEER_METADATA = ((PEER_KEY, "1"),)


def from_peer(context: grpc.aio.ServicerContext) -> bool:
    return any(key == PEER_KEY for key, _ in context.invocation_metadata() or ())


class PeerGroup:
    def __init__(self) -> None:
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[pbg.GRPCInferenceServiceAsyncStub] = []
        self._by_address: dict[str, pbg.GRPCInferenceServiceAsyncStub] = {}
        self.own_address = ""

    def __bool__(self) -> bool:
        return bool(self._stubs)

    def connect(self, addresses: Iterable[str], own_address: str = "") -> None:
        self.own_address = own_address
        for address in addresses:
            channel = grpc.aio.insecure_channel(address)
            self._channels.append(channel)
            stub: pbg.GRPCInferenceServiceAsyncStub = pbg.GRPCInferenceServiceStub(  # type: ignore[assignment]
                channel
            )
            self._stubs.append(stub)
            self._by_address[address] = stub

    def owner(self, key: str) -> pbg.GRPCInferenceServiceAsyncStub | None:
        """The sibling that owns a sequence (None: this worker does).

        A stateful model keeps a sequence's state in one process; every worker
        picks the same owner for a correlation id (rendezvous hashing over the
        workers' private addresses), so a sequence whose requests reach
        different workers (different client connections) still meets its state.
        """
        if not key or not self._by_address:
            return None
        everyone = [self.own_address, *self._by_address]
        best = max(everyone, key=lambda a: _weight(key, a))
        return None if best == self.own_address else self._by_address[best]

    async def infer(
        self, stub: pbg.GRPCInferenceServiceAsyncStub, request: pb.ModelInferRequest,
        timeout: float | None,
    ) -> pb.ModelInferResponse:  # fmt: skip
        """A request answered by the sibling that owns its sequence (errors as theirs)."""
        try:
            answer: pb.ModelInferResponse = await stub.ModelInfer(
                request, metadata=PEER_METADATA, timeout=timeout
            )
            return answer
        except grpc.aio.AioRpcError as exc:
            raise _relayed(exc) from None

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))

    async def each(self, method: str, request: Any) -> list[Any]:
        """Call `method` on every sibling; one failing fails the call."""
        calls = [
            getattr(s, method)(request, metadata=PEER_METADATA, timeout=600) for s in self._stubs
        ]
        try:
            return list(await asyncio.gather(*calls))
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(f"a sibling worker failed {method}: {exc.details()}") from None

    async def load(self, name: str, parameters: dict[str, object] | None = None) -> None:
        request = pb.RepositoryModelLoadRequest(model_name=name)
        for key, value in (parameters or {}).items():
            _set_parameter(request.parameters[key], value)
        await self.each("RepositoryModelLoad", request)

    async def unload(self, name: str) -> None:
        await self.each("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name=name))

    async def statistics(self, name: str, version: str) -> list[pb.ModelStatistics]:
        request = pb.ModelStatisticsRequest(name=name, version=version)
        return [s for r in await self.each("ModelStatistics", request) for s in r.model_stats]

    async def register_region(self, name: str, key: str, offset: int, byte_size: int) -> None:
        request = pb.SystemSharedMemoryRegisterRequest(
            name=name, key=key, offset=offset, byte_size=byte_size
        )
        await self.each("SystemSharedMemoryRegister", request)

    async def unregister_region(self, name: str) -> None:
        await self.each(
            "SystemSharedMemoryUnregister", pb.SystemSharedMemoryUnregisterRequest(name=name)
        )


def _set_parameter(param: pb.ModelRepositoryParameter, value: object) -> None:
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, bytes):
        param.bytes_param = value
    else:
        param.string_param = str(value)


def _weight(key: str, address: str) -> int:
    digest = hashlib.blake2b(f"{key}\x00{address}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _relayed(exc: grpc.aio.AioRpcError) -> ModelportError:
    error = ModelportError(exc.details() or exc.code().name)
    error.code = exc.code().name
    return error
