"""`modelport.pool.v1.PoolReplica`: every replica pushes what it serves to routers.

Each report says whether the replica takes requests and which versions of each
model are ready (`served`), so a router moves an alias's traffic only once the
version is ready here; a pool replica adds its memory budget and the models
loaded or loading. A report goes out at once and after every change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from modelport.errors import FailedPrecondition, InvalidInput
from modelport.inference.model_manager import ModelManager
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
            pb.PoolModel(name=name, state=state, size_bytes=size, in_flight=pins)
            for name, (state, size, pins) in cache.state().items()
        ],
        hits=stats.hits,
        loads=stats.misses,
        evictions=stats.evictions,
        load_failures=stats.load_failures,
        load_seconds=sum(stats.load_seconds),
    )


def replica_state(manager: ModelManager, pool: ModelPool | None) -> pb.PoolState:
    state = pool_state(pool) if pool is not None else pb.PoolState()
    state.serving = manager.serving
    for name, (model_state, versions) in sorted(manager.served().items()):
        state.served.add(name=name, versions=versions, state=model_state)
    return state


class PoolServicer(pb_grpc.PoolReplicaServicer):
    def __init__(self, manager: ModelManager, pool: ModelPool | None = None) -> None:
        self.manager = manager
        self.pool = pool

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        changed = asyncio.Event()

        def on_model(_name: str, _ready: bool) -> None:
            changed.set()

        self.manager.listeners.append(on_model)
        if self.pool is not None:
            self.pool.listeners.append(changed.set)
        try:
            while True:
                changed.clear()
                yield replica_state(self.manager, self.pool)
                if self.manager.draining:
                    return  # routers heard "not serving"; the drain need not wait for us
                await changed.wait()
                await asyncio.sleep(0.01)  # a burst of changes goes as one report
        finally:
            self.manager.listeners.remove(on_model)
            if self.pool is not None:
                self.pool.listeners.remove(changed.set)

    async def Prefetch(self, request: Any, context: Any) -> Any:
        if self.pool is None:
            raise FailedPrecondition("Prefetch: this replica is not a pool replica (--pool)")
        if not request.model:
            raise InvalidInput("PrefetchRequest: model is empty")
        self.pool.prefetch(request.model)
        return pb.PrefetchResponse()


def register(server: grpc.aio.Server, servicer: PoolServicer) -> None:
    pb_grpc.add_PoolReplicaServicer_to_server(servicer, server)
