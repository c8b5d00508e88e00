"""Follows each pool replica's pushed state (`modelport.pool.v1.PoolReplica/Watch`).

One stream per pool replica, opened when discovery reports it and kept until it
leaves; a broken stream takes the replica out of placement until it reconnects
(its requests then go to the other pool replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc

from modelport.proto.modelport.pool.v1 import pool_pb2 as pb
from modelport.proto.modelport.pool.v1 import pool_pb2_grpc as pb_grpc
from modelport.router.placement import PooledModel, PoolPlacer, PoolReplica
from modelport.router.replicas import Replica

log = logging.getLogger(__name__)


def _stub(replica: Replica) -> pb_grpc.PoolReplicaAsyncStub:
    return pb_grpc.PoolReplicaStub(replica.handle.channel)  # type: ignore[return-value]


def from_state(address: str, state: Any) -> PoolReplica:
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


async def prefetch(replica: Replica, model: str) -> None:
    await _stub(replica).Prefetch(pb.PrefetchRequest(model=model), timeout=10)


class PoolWatcher:
    def __init__(self, placer: PoolPlacer, retry_seconds: float = 0.5) -> None:
        self.placer = placer
        self.retry_seconds = retry_seconds
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # address -> the last report (counters for routes and metrics).
        self.reports: dict[str, Any] = {}

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

    async def _follow(self, replica: Replica) -> None:
        while not replica.removed:
            try:
                async for state in _stub(replica).Watch(pb.WatchPoolRequest()):
                    self.reports[replica.address] = state
                    self.placer.update(from_state(replica.address, state))
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                log.debug("pool replica %s: watch ended (%s)", replica.address, exc.code().name)
            self.placer.remove(replica.address)
            await asyncio.sleep(self.retry_seconds)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
