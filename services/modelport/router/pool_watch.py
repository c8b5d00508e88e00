"""Follows each replica's pushed state (`modelport.pool.v1.PoolReplica/Watch`).

One stream per replica, opened when discovery reports it and kept until it
leaves. Each `ReplicaState` sets the versions the replica serves in the
`ReplicaTable` at once (nothing while it is not ready), so rollouts route only
to versions reported READY and requests held at zero replicas go the moment a
replica reports their model; a pool replica's part goes to the `PoolPlacer`.
A replica that does not offer the stream (UNIMPLEMENTED) is handed to the
fallback (polling its RepositoryIndex). A broken stream keeps the versions
last reported (outlier ejection deals with replicas that are really down),
takes a pool replica out of placement, and is reopened after `retry_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import grpc

from modelport.proto.modelport.pool.v1 import pool_pb2 as pb
from modelport.proto.modelport.pool.v1 import pool_pb2_grpc as pb_grpc
from modelport.router.placement import PooledModel, PoolPlacer, PoolReplica
from modelport.router.replicas import Replica, ReplicaTable

log = logging.getLogger(__name__)


def _stub(replica: Replica) -> pb_grpc.PoolReplicaAsyncStub:
    return pb_grpc.PoolReplicaStub(replica.handle.channel)  # type: ignore[return-value]


def from_state(address: str, state: Any) -> PoolReplica:
    """A pool replica's part of its report, for placement."""
    return PoolReplica(
        address,
        int(state.budget_bytes),
        {
            m.name: PooledModel(
                m.state, int(m.size_bytes), version=int(m.version), priority=int(m.priority)
            )
            for m in state.models
        },
    )


def served_versions(state: Any) -> dict[str, frozenset[str]]:
    """model -> versions taking requests; nothing while the replica is not ready
    (starting, draining). A model with no version serving (loading for the first
    time, failed) is left out: the table would read it as served unversioned."""
    if not state.ready:
        return {}
    return {m.name: frozenset(m.versions) for m in state.served if m.versions}


async def prefetch(replica: Replica, model: str) -> None:
    await _stub(replica).Prefetch(pb.PrefetchRequest(model=model), timeout=10)


class ReplicaWatcher:
    def __init__(
        self,
        table: ReplicaTable,
        placer: PoolPlacer,
        fallback: Callable[[Replica], None],
        retry_seconds: float = 0.5,
        on_load: Callable[[str, str], None] | None = None,
    ) -> None:
        self.table = table
        # Told (model, phase name) for each model a replica reports on its way
        # (the hold queue times cold starts by these phases).
        self.on_load = on_load
        self.placer = placer
        self.fallback = fallback
        self.retry_seconds = retry_seconds
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # address -> the last pool part a pool replica pushed (counters for routes, metrics).
        self.reports: dict[str, Any] = {}
        # address -> the models loading there, by phase (`ModelLoad`s).
        self.loads: dict[str, list[Any]] = {}

    def watch(self, replica: Replica) -> None:
        self.forget(replica.address)
        task = asyncio.get_running_loop().create_task(self._follow(replica))
        self._tasks[replica.address] = task

    def forget(self, address: str) -> None:
        task = self._tasks.pop(address, None)
        if task is not None:
            task.cancel()
        self.placer.remove(address)
        self.reports.pop(address, None)
        self.loads.pop(address, None)

    def _apply(self, replica: Replica, state: Any) -> None:
        self.table.set_versions(replica, served_versions(state))
        self.loads[replica.address] = list(state.loads)
        if self.on_load is not None:
            for load in state.loads:
                self.on_load(load.name, pb.ModelLoad.Phase.Name(load.phase))
        if state.HasField("pool"):
            self.reports[replica.address] = state.pool
            self.placer.update(from_state(replica.address, state.pool))

    async def _follow(self, replica: Replica) -> None:
        while not replica.removed:
            try:
                async for state in _stub(replica).Watch(pb.WatchPoolRequest()):
                    self._apply(replica, state)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    log.info("replica %s pushes no state; polling its index", replica.address)
                    self.fallback(replica)
                    return
                log.debug("replica %s: watch ended (%s)", replica.address, exc.code().name)
            except Exception:  # a bad report must not stop following the replica for good
                log.exception("replica %s: its state could not be applied", replica.address)
            self.placer.remove(replica.address)
            self.loads.pop(replica.address, None)
            await asyncio.sleep(self.retry_seconds)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
