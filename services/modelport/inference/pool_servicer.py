"""`modelport.pool.v1.PoolReplica`: every inference replica pushes its state to routers.

One `ReplicaState` on connect, then one after every change (a burst of changes
within 10 ms goes as one): whether it takes traffic, the versions it serves,
models on their way by phase, and on a pool replica its memory budget and
models. Whole states, so a router that reconnects needs nothing replayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from modelport.errors import FailedPrecondition, InvalidInput
from modelport.inference.model_manager import ModelManager
from modelport.inference.pool import ModelPool
from modelport.proto.modelport.pool.v1 import pool_pb2 as pb
from modelport.proto.modelport.pool.v1 import pool_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PoolReplica"].full_name

COALESCE_SECONDS = 0.01


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


def replica_state(manager: ModelManager, pool: ModelPool | None) -> pb.ReplicaState:
    state = pb.ReplicaState(ready=manager.serving)
    for name, (model_state, versions) in sorted(manager.served().items()):
        state.served.add(name=name, versions=[str(v) for v in versions], state=model_state)
    for load, in_phase, in_all in manager.phases.now():
        state.loads.add(
            name=load.name, version=load.version, phase=pb.ModelLoad.Phase.Value(load.phase),
            phase_seconds=in_phase, total_seconds=in_all,
        )  # fmt: skip
    if pool is not None:
        state.pool.CopyFrom(pool_state(pool))
    return state


class PoolServicer(pb_grpc.PoolReplicaServicer):
    def __init__(self, manager: ModelManager, pool: ModelPool | None = None) -> None:
        self.manager = manager
        self.pool = pool

    def _sources(self) -> list[list[Callable[[], None]]]:
        sources = [self.manager.state_listeners, self.manager.phases.listeners]
        if self.pool is not None:
            sources.append(self.pool.listeners)
        return sources

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        changed = asyncio.Event()
        for listeners in self._sources():
            listeners.append(changed.set)
        try:
            while True:
                changed.clear()
                yield replica_state(self.manager, self.pool)
                if self.manager.draining:
                    return  # routers heard "not ready"; the drain's wait for open calls ends
                await changed.wait()
                await asyncio.sleep(COALESCE_SECONDS)  # a burst of changes goes as one
        finally:
            for listeners in self._sources():
                listeners.remove(changed.set)

    async def Prefetch(self, request: Any, context: Any) -> Any:
        if self.pool is None:
            raise FailedPrecondition("Prefetch: this replica is not a pool replica (--pool)")
        if not request.model:
            raise InvalidInput("PrefetchRequest: model is empty")
        self.pool.prefetch(request.model)
        return pb.PrefetchResponse()


def register(server: grpc.aio.Server, servicer: PoolServicer) -> None:
    pb_grpc.add_PoolReplicaServicer_to_server(servicer, server)
