"""Which versions a replica serves, read from its own RepositoryIndex: for replicas
that do not push their state (`pool_watch`: UNIMPLEMENTED), such as other OIP servers.

Every replica is asked when discovery first reports it (so it takes traffic
within a second of turning ready) and then every `interval` seconds. A
replica not yet read gets no traffic; a replica whose read fails keeps what
was last read (outlier ejection deals with replicas that are really down).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from modelport.router.replicas import Replica, ReplicaTable

log = logging.getLogger(__name__)

Probe = Callable[[Replica], Awaitable[dict[str, frozenset[str]]]]


class VersionPoller:
    def __init__(
        self,
        table: ReplicaTable,
        probe: Probe,
        interval: float = 5.0,
        first_retry: float = 0.5,
        urgent: Callable[[Replica], bool] | None = None,
    ) -> None:
        self.table = table
        self.probe = probe
        self.interval = interval
        self.first_retry = first_retry
        # True while requests are held for a model this replica does not serve yet:
        # it is then read every `first_retry`, so they go as soon as it is ready.
        self.urgent = urgent
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def watch(self, replica: Replica) -> None:
        """Start polling a replica discovery just added."""
        old = self._tasks.pop(replica.address, None)
        if old is not None:
            old.cancel()
        task = asyncio.get_running_loop().create_task(self._poll(replica))
        self._tasks[replica.address] = task

    def forget(self, replica: Replica) -> None:
        task = self._tasks.pop(replica.address, None)
        if task is not None:
            task.cancel()

    async def refresh(self, replica: Replica) -> bool:
        try:
            self.table.set_versions(replica, await self.probe(replica))
            return True
        except Exception as exc:
            log.debug("index of %s unreadable: %s", replica.address, exc)
            return False

    async def _poll(self, replica: Replica) -> None:
        while not replica.removed:
            ok = await self.refresh(replica)
            pending = replica.versions is None and not ok
            if not pending and self.urgent is not None:
                pending = self.urgent(replica)
            await asyncio.sleep(self.first_retry if pending else self.interval)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
