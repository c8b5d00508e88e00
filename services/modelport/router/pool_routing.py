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
from modelport.router.policies import RoutingState, Target
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
        # The models the registry marks pooled -> memory estimate in bytes (0: the
        # archive's size). None: the policy source does not say (static policies),
        # and the pool takes any model no dedicated replica serves.
        self.pooled: dict[str, int] | None = None

    def on_state(self, state: RoutingState) -> None:
        self.pooled = state.pooled

    def takes(self, model: str, version: str) -> bool:
        """Whether a request goes to the pool: pool replicas exist, the registry marks
        the model pooled and no dedicated replica serves it (those always win: they
        were deployed for it)."""
        if not self.placer.replicas or model == POOL_MODEL:
            return False
        if self.pooled is not None and model not in self.pooled:
            return False
        return not self.table.candidates(model, version) and not any(
            model in r.models for r in self.table.replicas.values()
        )

    def replica_for(self, model: str, version: str) -> Replica:
        """The replica to ask about `model` (ModelMetadata, ModelConfig): where it is
        warm, else where a request for it would load it."""
        placement = self._place(model, version, set(), count=False)
        replica = self.table.replicas.get(placement.replica.address)
        if replica is None:
            raise Unavailable(f"model '{model}': its pool replica just left; retry")
        return replica

    async def forward(
        self, router: Router, target: Target, request: bytes, deadline: float | None
    ) -> bytes:
        from modelport.router.forwarding import BackendUnavailable

        tried: set[str] = set()
        while True:
            placement = self._place(target.model, target.version, tried)
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

    def _place(self, model: str, version: str, tried: set[str], count: bool = True) -> Placement:
        # A version number (an alias the router resolved) must be the one loaded
        # there: a replica holding another version counts as one that must load it.
        number = int(version) if version.isdigit() else 0
        estimate = (self.pooled or {}).get(model, 0)
        try:
            return self.placer.place(model, estimate, exclude=tried, version=number, count=count)
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
