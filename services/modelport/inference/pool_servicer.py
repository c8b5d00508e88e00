"""`modelport.pool.v1.PoolReplica`: a pool replica pushes its state to routers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from modelport.errors import InvalidInput
from modelport.inference.pool import ModelPool
from modelport.proto.modelport.pool.v1 import pool_pb2 as pb
from modelport.proto.modelport.pool.v1 import pool_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PoolReplica"].full_name


def pool_state(pool: ModelPool) -> pb.PoolState:
    cache = pool.cache
    stats = cache.stats
    return pb.PoolState(
        budget_bytes=cache.budget_bytes,
        used_bytes=cache.charged_bytes,
        models=[
            pb.PoolModel(
                name=name,
                state=state,
                size_bytes=size,
                in_flight=pins,
                version=pool.version(name),
                priority=pool.priority(name),
            )
            for name, (state, size, pins) in cache.state().items()
        ],
        hits=stats.hits,
        loads=stats.misses,
        evictions=stats.evictions,
        load_failures=stats.load_failures,
        load_seconds=sum(stats.load_seconds),
    )


class PoolServicer(pb_grpc.PoolReplicaServicer):
    def __init__(self, pool: ModelPool) -> None:
        self.pool = pool

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        changed = asyncio.Event()
        self.pool.listeners.append(changed.set)
        try:
            while True:
                changed.clear()
                yield pool_state(self.pool)
                await changed.wait()
                await asyncio.sleep(0.01)  # a burst of changes goes as one report
        finally:
            self.pool.listeners.remove(changed.set)

    async def Prefetch(self, request: Any, context: Any) -> Any:
        if not request.model:
            raise InvalidInput("PrefetchRequest: model is empty")
        self.pool.prefetch(request.model)
        return pb.PrefetchResponse()


def register(server: grpc.aio.Server, servicer: PoolServicer) -> None:
    pb_grpc.add_PoolReplicaServicer_to_server(servicer, server)
