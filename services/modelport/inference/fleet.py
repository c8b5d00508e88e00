"""Model control for the whole server: this process and its sibling workers.

With `--workers N` a control call reaches one process; a load or unload (with
its config and file overrides) and a shared memory registration must act on
every sibling, and statistics must add up across them. `ModelControl` does
that over a `Siblings` seam (gRPC in `peers.PeerGroup`, nothing when the
server runs in one process). A call that came from a sibling (`fan_out=False`)
acts locally only, so fan-out never loops.
"""

from __future__ import annotations

from typing import Protocol

from modelport.artifacts.config import read_config
from modelport.artifacts.repository import model_dir
from modelport.errors import FailedPrecondition, ModelportError, NotFound, Unavailable
from modelport.inference.load_overrides import parse_load_parameters
from modelport.inference.model_manager import IndexEntry, ModelManager
from modelport.inference.shared_memory import RegionStatus, SystemSharedMemory
from modelport.inference.stats_messages import merge_statistics, statistics_message
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import model_config_pb2 as mc


class Siblings(Protocol):
    """The other workers of this server."""

    def __bool__(self) -> bool: ...

    async def load(self, name: str, parameters: dict[str, object] | None = None) -> None: ...

    async def unload(self, name: str) -> None: ...

    async def statistics(self, name: str, version: str) -> list[pb.ModelStatistics]: ...

    async def register_region(self, name: str, key: str, offset: int, byte_size: int) -> None: ...

    async def unregister_region(self, name: str) -> None: ...


class ModelControl:
    def __init__(
        self,
        manager: ModelManager,
        siblings: Siblings,
        *,
        explicit: bool,
        shared_memory: SystemSharedMemory | None = None,
    ) -> None:
        self._manager = manager
        self._siblings = siblings
        self._explicit = explicit
        self.shared_memory = (
            shared_memory if shared_memory is not None else SystemSharedMemory(enabled=False)
        )

    def index(self, repository: str, ready_only: bool) -> list[IndexEntry]:
        _check_repository(repository)
        return self._manager.index(ready_only=ready_only)

    async def load(
        self, repository: str, name: str, parameters: dict[str, object], *, fan_out: bool
    ) -> None:
        """Load (or reload) `name`; Triton's `config` and `file:` parameters override
        the repository's config and files for this load."""
        self._check_control(repository, "load")
        override = None
        if parameters:
            override = parse_load_parameters(name, parameters, self._repository_config(name))
        await self._manager.load(name, override)
        if fan_out and self._siblings:
            await self._siblings.load(name, parameters)

    def _repository_config(self, name: str) -> mc.ModelConfig | None:
        if self._manager.repository is None:
            return None
        try:
            return read_config(model_dir(self._manager.repository, name))
        except (ModelportError, OSError):
            return None

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

    # -- system shared memory regions, the same in every worker ------------------

    def regions(self, name: str) -> list[RegionStatus]:
        return self.shared_memory.status(name)

    async def register_region(
        self, name: str, key: str, offset: int, byte_size: int, *, fan_out: bool
    ) -> None:
        self.shared_memory.register(name, key, offset, byte_size)
        if fan_out and self._siblings:
            await self._siblings.register_region(name, key, offset, byte_size)

    async def unregister_region(self, name: str, *, fan_out: bool) -> None:
        self.shared_memory.unregister(name)
        if fan_out and self._siblings:
            await self._siblings.unregister_region(name)

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
