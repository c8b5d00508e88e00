"""Requests for models no dedicated Deployment serves go to the pool, placed by `placement`.

Pool replicas are discovered like any replica, under the reserved model name
`modelport-pool` (`--pool-endpoint`, or a Service labelled
`modelport.io/model=modelport-pool`). Each one pushes its state (budget, bytes in
use, every model loading or ready there: `pool_watch`), which `PoolPlacer`
keeps; between reports the router's own books mark a model sent for loading as
loading there, so concurrent first requests join that one load.

Transport-free: the router's `_call` sends, `prefetch` asks a replica to load a
hot model's second copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from modelport.errors import NotFound, Unavailable
from modelport.router.placement import Placement, PoolPlacer, PoolReplica
from modelport.router.policies import Target
from modelport.router.replicas import Replica, ReplicaTable

if TYPE_CHECKING:
    from modelport.router.forwarding import Router

log = logging.getLogger(__name__)

POOL_MODEL = "modelport-pool"

Prefetch = Callable[[Replica, str], Awaitable[None]]


class PoolRouting:
    def __init__(self, table: ReplicaTable, placer: PoolPlacer, prefetch: Prefetch) -> None:
        self.table = table
        self.placer = placer
        self.prefetch = prefetch
        self._tasks: set[asyncio.Task[None]] = set()

    def takes(self, model: str, version: str) -> bool:
        """Whether a request goes to the pool: pool replicas exist and no dedicated
        replica serves the model (those always win: they were deployed for it)."""
        if not self.placer.replicas or model == POOL_MODEL:
            return False
        return not self.table.candidates(model, version) and not any(
            model in r.models for r in self.table.replicas.values()
        )

    async def forward(
        self, router: Router, target: Target, request: bytes, deadline: float | None
    ) -> bytes:
        from modelport.router.forwarding import BackendUnavailable

        tried: set[str] = set()
        while True:
            placement = self._place(target.model, tried)
            pooled = placement.replica
            replica = self.table.replicas.get(pooled.address)
            if replica is None:  # discovery dropped it since its last report
                self.placer.remove(pooled.address)
                continue
            if placement.also_load is not None:
                self._prefetch(placement.also_load, target.model)
            self.placer.started(pooled, target.model)
            try:
                return await router._call(replica, target, request, deadline)
            except BackendUnavailable:
                tried.add(pooled.address)
                if len(tried) >= 2:
                    raise
                log.info("pool replica %s unavailable; placing '%s' elsewhere",
                         pooled.address, target.model)  # fmt: skip
            finally:
                self.placer.finished(pooled, target.model)

    def _place(self, model: str, tried: set[str]) -> Placement:
        try:
            return self.placer.place(model, 0, exclude=tried)
        except NotFound:
            if tried:
                raise Unavailable(f"model '{model}': no other pool replica to retry on") from None
            raise

    def _prefetch(self, pooled: PoolReplica, model: str) -> None:
        replica = self.table.replicas.get(pooled.address)
        if replica is None:
            return
        self.placer.started(pooled, model)  # counts as loading there until it reports
        self.placer.finished(pooled, model)

        async def ask() -> None:
            try:
                await self.prefetch(replica, model)
            except Exception as exc:
                log.info("prefetch of '%s' on %s failed: %s", model, replica.address, exc)

        task = asyncio.get_running_loop().create_task(ask())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
