"""Model control for the whole server: this process and its sibling workers.

With `--workers N` a control call reaches one process; a load or unload must
act on every sibling and statistics must add up across them. `ModelControl`
does both over a `Siblings` seam (gRPC in `peers.PeerGroup`, nothing when the
server runs in one process). A call that came from a sibling (`fan_out=False`)
acts locally only, so fan-out never loops.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from modelport.errors import FailedPrecondition, InvalidInput, NotFound, Unavailable
from modelport.inference.model_manager import IndexEntry, ModelManager
from modelport.inference.stats_messages import merge_statistics, statistics_message
from modelport.proto.inference import grpc_service_pb2 as pb


class Siblings(Protocol):
    """The other workers of this server."""

    def __bool__(self) -> bool: ...

    async def load(self, name: str) -> None: ...

    async def unload(self, name: str) -> None: ...

    async def statistics(self, name: str, version: str) -> list[pb.ModelStatistics]: ...


class ModelControl:
    def __init__(self, manager: ModelManager, siblings: Siblings, *, explicit: bool) -> None:
        self._manager = manager
        self._siblings = siblings
        self._explicit = explicit

    def index(self, repository: str, ready_only: bool) -> list[IndexEntry]:
        _check_repository(repository)
        return self._manager.index(ready_only=ready_only)

    async def load(
        self, repository: str, name: str, parameters: Collection[str], *, fan_out: bool
    ) -> None:
        self._check_control(repository, "load")
        if parameters:
            raise InvalidInput(
                f"model '{name}': load parameters {sorted(parameters)} are not supported; "
                "change the repository instead"
            )
        await self._manager.load(name)
        if fan_out and self._siblings:
            await self._siblings.load(name)

    async def unload(self, repository: str, name: str, *, fan_out: bool) -> None:
        self._check_control(repository, "unload")
        await self._manager.unload(name)
        if fan_out and self._siblings:
            await self._siblings.unload(name)

    async def statistics(
        self, name: str, version: str, *, fan_out: bool
    ) -> list[pb.ModelStatistics]:
        """Triton's statistics of one model (or all, when `name` is empty) on this server."""
        names = [name] if name else [e.name for e in self._manager.loaded()]
        local: list[pb.ModelStatistics] = []
        for entry in (self._manager.entry(n) for n in names):
            versions = list(entry.versions.values())
            if version:
                versions = [self._manager.get(name, version)]
            local.extend(statistics_message(served.stats) for served in versions)
        if not (fan_out and self._siblings):
            return local
        return merge_statistics([*local, *await self._siblings.statistics(name, version)])

    def _check_control(self, repository: str, action: str) -> None:
        _check_repository(repository)
        if not self._explicit:
            raise FailedPrecondition(
                f"explicit model {action} is disabled; start the server with "
                "--model-control-mode explicit"
            )
        if self._manager.draining:
            raise Unavailable("server is shutting down")


def _check_repository(name: str) -> None:
    if name and name != "default":
        raise NotFound(f"repository '{name}' does not exist (this server has 'default')")
