"""Which versions each replica serves, as the replica itself pushes it.

Each replica is followed from the moment discovery reports it: its push
(`PoolReplica/Watch`, see `grpc_backends.watch_served`) says what it serves now
and again on every change (a version ready, a version dropped, a drain), so an
alias move reaches a replica only once the version is ready there, and a
draining replica gets nothing new. A replica that does not push (an older one,
or another OIP server) is read from its RepositoryIndex instead: at once, then
every `interval` seconds. A replica not yet heard from gets no traffic; one whose
stream breaks keeps what it last said (outlier ejection deals with replicas that
are really down) until it is heard from again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from modelport.router.replicas import Replica, ReplicaTable

log = logging.getLogger(__name__)

Served = dict[str, frozenset[str]]
Probe = Callable[[Replica], Awaitable[Served]]
Push = Callable[[Replica], AsyncIterator[Served]]


class PushUnsupported(Exception):
    """Raised by a `Push` for a replica that does not push: it is polled instead."""


class VersionPoller:
    def __init__(
        self,
        table: ReplicaTable,
        probe: Probe,
        interval: float = 5.0,
        first_retry: float = 0.5,
        urgent: Callable[[Replica], bool] | None = None,
        push: Push | None = None,
    ) -> None:
        self.table = table
        self.probe = probe
        self.push = push
        self.interval = interval
        self.first_retry = first_retry
        # True while requests are held for a model this replica does not serve yet:
        # a polled replica is then read every `first_retry`, so they go once it is ready.
        self.urgent = urgent
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.pushing: set[str] = set()  # addresses followed by their push

    def watch(self, replica: Replica) -> None:
        """Start following a replica discovery just added."""
        old = self._tasks.pop(replica.address, None)
        if old is not None:
            old.cancel()
        task = asyncio.get_running_loop().create_task(self._follow(replica))
        self._tasks[replica.address] = task

    def forget(self, replica: Replica) -> None:
        task = self._tasks.pop(replica.address, None)
        if task is not None:
            task.cancel()
        self.pushing.discard(replica.address)

    async def refresh(self, replica: Replica) -> bool:
        try:
            self.table.set_versions(replica, await self.probe(replica))
            return True
        except Exception as exc:
            log.debug("index of %s unreadable: %s", replica.address, exc)
            return False

    async def _follow(self, replica: Replica) -> None:
        if self.push is None:
            return await self._poll(replica)
        while not replica.removed:
            try:
                async for served in self.push(replica):
                    self.pushing.add(replica.address)
                    self.table.set_versions(replica, served)
            except PushUnsupported:
                self.pushing.discard(replica.address)
                return await self._poll(replica)
            except Exception as exc:  # the replica went away or restarts: listen again
                log.debug("push of %s ended: %s", replica.address, exc)
            await asyncio.sleep(self.first_retry)

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
