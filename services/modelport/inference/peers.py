"""Sibling worker processes of one inference server (see `workers`).

Control RPCs must act on the whole server, not on the one process a caller's
connection landed on: a model load or unload is repeated on every sibling, and
statistics are gathered from all of them and summed.
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

PEER_METADATA = (("x-modelport-peer", "1"),)


def from_peer(context: Any) -> bool:
    return any(key == "x-modelport-peer" for key, _ in context.invocation_metadata() or ())


class PeerGroup:
    def __init__(self) -> None:
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[pbg.GRPCInferenceServiceStub] = []
        self._by_address: dict[str, pbg.GRPCInferenceServiceStub] = {}
        self.own_address = ""

    def __bool__(self) -> bool:
        return bool(self._stubs)

    def connect(self, addresses: Iterable[str], own_address: str = "") -> None:
        self.own_address = own_address
        for address in addresses:
            channel = grpc.aio.insecure_channel(address)
            self._channels.append(channel)
            stub = pbg.GRPCInferenceServiceStub(channel)
            self._stubs.append(stub)
            self._by_address[address] = stub

    def owner(self, key: str) -> pbg.GRPCInferenceServiceStub | None:
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
        self, stub: pbg.GRPCInferenceServiceStub, request: pb.ModelInferRequest,
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

    async def load(self, request: pb.RepositoryModelLoadRequest) -> None:
        await self.each("RepositoryModelLoad", request)

    async def unload(self, request: pb.RepositoryModelUnloadRequest) -> None:
        await self.each("RepositoryModelUnload", request)

    async def statistics(self, request: pb.ModelStatisticsRequest) -> list[pb.ModelStatistics]:
        return [s for r in await self.each("ModelStatistics", request) for s in r.model_stats]


def _weight(key: str, address: str) -> int:
    digest = hashlib.blake2b(f"{key}\x00{address}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _relayed(exc: grpc.aio.AioRpcError) -> ModelportError:
    error = ModelportError(exc.details() or exc.code().name)
    error.code = exc.code().name
    return error


def _add(total: pb.StatisticDuration, part: pb.StatisticDuration) -> None:
    total.count += part.count
    total.ns += part.ns


def merge_statistics(stats: Iterable[pb.ModelStatistics]) -> list[pb.ModelStatistics]:
    """Sum the statistics of the same model version reported by several workers."""
    merged: dict[tuple[str, str], pb.ModelStatistics] = {}
    for item in stats:
        key = (item.name, item.version)
        if key not in merged:
            merged[key] = pb.ModelStatistics()
            merged[key].CopyFrom(item)
            continue
        total = merged[key]
        total.last_inference = max(total.last_inference, item.last_inference)
        total.inference_count += item.inference_count
        total.execution_count += item.execution_count
        for field in ("success", "fail", "queue", "compute_input", "compute_infer",
                      "compute_output", "cache_hit", "cache_miss"):  # fmt: skip
            _add(getattr(total.inference_stats, field), getattr(item.inference_stats, field))
        by_size = {b.batch_size: b for b in total.batch_stats}
        for batch in item.batch_stats:
            if batch.batch_size not in by_size:
                total.batch_stats.add().CopyFrom(batch)
                by_size[batch.batch_size] = total.batch_stats[-1]
                continue
            for field in ("compute_input", "compute_infer", "compute_output"):
                _add(getattr(by_size[batch.batch_size], field), getattr(batch, field))
    for total in merged.values():
        total.batch_stats.sort(key=lambda b: b.batch_size)
    return list(merged.values())
