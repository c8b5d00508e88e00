"""The router's gRPC health service answers per model: `Health/Check` with
service = a model name is SERVING while some replica that takes traffic serves
a version of it, NOT_SERVING otherwise (as the inference service answers for its
own models). Probes and load balancers in front of the router can so tell a
model with no ready replica from a router that is down.

Readiness changes come from discovery, the replicas' pushed versions, drains and
ejections, all in memory; a short in-memory reconcile covers every one of them
without a hook in each, and only changes reach the health servicer (so its
Watch streams see transitions, not repeats).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from modelport.router.replicas import ReplicaTable

SetServing = Callable[[str, bool], Awaitable[None]]


class ModelHealth:
    def __init__(self, table: ReplicaTable, set_serving: SetServing, interval: float = 0.25):
        self.table = table
        self.set_serving = set_serving
        self.interval = interval
        self.reported: dict[str, bool] = {}

    def current(self) -> dict[str, bool]:
        """model -> whether a replica taking traffic serves some version of it."""
        models = self.table.known_models() | set(self.reported)
        return {model: bool(self.table.candidates(model, "")) for model in models if model}

    async def reconcile(self) -> None:
        for model, ready in sorted(self.current().items()):
            if self.reported.get(model) != ready:
                await self.set_serving(model, ready)
                self.reported[model] = ready

    async def run(self) -> None:
        while True:
            await self.reconcile()
            await asyncio.sleep(self.interval)
