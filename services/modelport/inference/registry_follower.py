"""Inference services that follow the registry: `--registry ADDR --model NAME@ALIAS`.

For each followed model the follower resolves its references, fetches the
archives into the sha256-keyed `ArtifactCache`, and asks the `ModelManager` to
load them (`load_directory` loads and warms the new versions beside the old,
swaps, and drains the old: no request fails). It then watches the registry and
repeats that whenever an alias it follows moves.

The registry is not on the serving path: when it is down at start the follower
serves what the cache last held (if anything) and retries with backoff; when
it goes down later, serving carries on untouched until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import grpc

from modelport.artifacts.refs import Ref
from modelport.artifacts.sealed_archives import SealedArchive
from modelport.artifacts.sealed_files import SealedFiles
from modelport.common import tracing
from modelport.common.tls import ChannelMaker
from modelport.errors import ModelportError
from modelport.inference.artifact_cache import Artifact, ArtifactCache
from modelport.inference.load_phases import DOWNLOADING, LoadPhases
from modelport.proto.modelport.registry.v1 import registry_pb2 as pb
from modelport.proto.modelport.registry.v1 import registry_pb2_grpc

log = logging.getLogger(__name__)

Kind = pb.WatchEvent.Kind
# Events after which a followed model's references may resolve differently.
RELEVANT = {Kind.ALIAS_MOVED, Kind.ALIAS_DELETED, Kind.VERSION_ADDED, Kind.VERSION_DELETED}


class DirectoryLoader(Protocol):
    async def load_directory(
        self, name: str, model_dir: Path, versions: Sequence[int] | None = None
    ) -> None: ...

    async def load_sealed(self, name: str, archives: Mapping[int, SealedArchive]) -> None: ...

    @property
    def phases(self) -> LoadPhases: ...


class RegistryFollower:
    def __init__(
        self,
        manager: DirectoryLoader,
        address: str,
        refs: Sequence[str],
        cache_dir: Path | str,
        *,
        min_backoff: float = 0.2,
        max_backoff: float = 10.0,
        channels: ChannelMaker | None = None,
        sealing: SealedFiles | None = None,
    ) -> None:
        self.manager = manager
        self.address = address
        # Plaintext unless upstream TLS is configured (or the address is grpcs://).
        self.channels = channels or ChannelMaker()
        self.refs: dict[str, list[Ref]] = {}
        for text in refs:
            ref = Ref.parse(text)
            self.refs.setdefault(ref.model, []).append(ref)
        self.cache = ArtifactCache(cache_dir, sealing)
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.serving: dict[str, list[Artifact]] = {}
        # Set once every followed model serves something.
        self.ready = asyncio.Event()
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="registry-follower")

    async def stop(self) -> None:
        self.ready.set()  # release anyone still waiting for the first load
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _check_ready(self) -> None:
        if all(self.serving.get(model) for model in self.refs):
            self.ready.set()

    async def _run(self) -> None:
        failures = 0
        tried_cache = False
        while True:
            try:
                await self.channels.run_with(self.address, self._follow_on)
                failures = 0  # ended cleanly (registry draining) or certificates rotated
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                self.connected.clear()
                failures += 1
                log.warning(
                    "registry %s: %s (%s); serving continues, retrying",
                    self.address,
                    exc.code().name,
                    exc.details(),
                )
            except Exception:
                self.connected.clear()
                failures += 1
                log.exception("registry follower: unexpected error; serving continues, retrying")
            if not tried_cache and not self.ready.is_set():
                tried_cache = True
                await self._serve_from_cache()
            delay = min(self.max_backoff, self.min_backoff * 2 ** min(failures, 16))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _follow_on(self, channel: grpc.aio.Channel) -> None:
        stub: registry_pb2_grpc.ModelRegistryAsyncStub = (
            registry_pb2_grpc.ModelRegistryStub(channel)  # type: ignore[assignment]
        )
        await self._follow(stub)

    async def _follow(self, stub: registry_pb2_grpc.ModelRegistryAsyncStub) -> None:
        """Sync every model, then apply changes from Watch until the stream breaks."""
        # Everything after this revision is replayed below, so no move is missed.
        revision = (await stub.ListModels(pb.ListModelsRequest(), timeout=10)).revision
        self.connected.set()
        for model in self.refs:
            await self._sync(stub, model)
        request = pb.WatchRequest(after_revision=revision, models=list(self.refs))
        async for event in stub.Watch(request):
            if event.kind in RELEVANT and event.model in self.refs:
                await self._sync(stub, event.model)

    async def _resolve(
        self, stub: registry_pb2_grpc.ModelRegistryAsyncStub, model: str
    ) -> list[Artifact]:
        found: list[Artifact] = []
        for ref in self.refs[model]:
            try:
                answer = await stub.Resolve(pb.ResolveRequest(ref=str(ref)), timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                log.warning("registry: %s does not resolve yet: %s", ref, exc.details())
                continue
            artifact = Artifact(model, answer.version, answer.sha256)
            if all(a.version != artifact.version for a in found):
                found.append(artifact)
        return found

    async def _sync(self, stub: registry_pb2_grpc.ModelRegistryAsyncStub, model: str) -> None:
        wanted = await self._resolve(stub, model)
        if not wanted or wanted == self.serving.get(model):
            return
        for artifact in wanted:
            if not await asyncio.to_thread(self.cache.has, artifact.sha256):
                await self._download(stub, artifact)
        await self._load(model, wanted)

    async def _download(
        self, stub: registry_pb2_grpc.ModelRegistryAsyncStub, artifact: Artifact
    ) -> None:
        phases = self.manager.phases
        phases.enter(artifact.model, DOWNLOADING, str(artifact.version))
        try:
            await fetch_artifact(stub, self.cache, artifact)
        except BaseException:
            phases.done(artifact.model)
            raise

    async def _load(self, model: str, wanted: list[Artifact]) -> None:
        versions = [a.version for a in wanted]
        if self.cache.sealing is not None:
            await self._load_sealed(model, wanted)
            return
        model_dir = await asyncio.to_thread(self.cache.model_dir, model, wanted)
        try:
            await self.manager.load_directory(model, model_dir, versions=versions)
        except ModelportError as exc:
            # The old versions keep serving; the next change (or reconnect) tries again.
            log.error(
                "model '%s' versions %s from the registry failed to load: %s", model, versions, exc
            )
            return
        previous = self.serving.get(model, [])
        self.serving[model] = wanted
        await asyncio.to_thread(self.cache.remember, self.serving)
        keep = [model_dir]
        if previous:
            keep.append(await asyncio.to_thread(self.cache.model_dir, model, previous))
        await asyncio.to_thread(self.cache.prune, model, keep)
        log.info("model '%s' now serves versions %s from the registry", model, versions)
        self._check_ready()

    async def _load_sealed(self, model: str, wanted: list[Artifact]) -> None:
        """Encrypted cache: the versions load from their sealed archives in memory."""
        try:
            await self.manager.load_sealed(model, self.cache.sealed_archives(wanted))
        except ModelportError as exc:
            log.error("model '%s' from the registry failed to load: %s", model, exc)
            return
        self.serving[model] = wanted
        await asyncio.to_thread(self.cache.remember, self.serving)
        log.info(
            "model '%s' now serves versions %s (encrypted cache)",
            model,
            [a.version for a in wanted],
        )
        self._check_ready()

    async def _serve_from_cache(self) -> None:
        """Registry down at start: serve what the cache last held for each model."""
        remembered = await asyncio.to_thread(self.cache.recall)
        for model in self.refs:
            artifacts = remembered.get(model, [])
            if artifacts and not self.serving.get(model):
                present = [await asyncio.to_thread(self.cache.has, a.sha256) for a in artifacts]
                if all(present):
                    log.info("registry unreachable: serving '%s' from the local cache", model)
                    await self._load(model, artifacts)


async def fetch_artifact(
    stub: registry_pb2_grpc.ModelRegistryAsyncStub, cache: ArtifactCache, artifact: Artifact
) -> None:
    """Download one version's archive from the registry into the cache (sha256-checked);
    sealed as it arrives when the cache is encrypted: no plaintext on disk."""
    writer = cache.writer()
    request = pb.DownloadVersionRequest(ref=f"{artifact.model}:{artifact.version}")
    span = tracing.span(tracing.REGISTRY_DOWNLOAD, model=artifact.model, version=artifact.version)
    try:
        with span:
            stream = stub.DownloadVersion(
                request, timeout=600, metadata=tuple(tracing.inject_metadata())
            )
            async for message in stream:
                if message.WhichOneof("part") == "chunk":
                    writer.write(message.chunk)
                elif message.header.sha256 != artifact.sha256:
                    raise ModelportError(
                        f"model '{artifact.model}' version {artifact.version}: registry "
                        f"sent sha256 {message.header.sha256}, resolved {artifact.sha256}"
                    )
        await asyncio.to_thread(cache.adopt_written, writer, artifact.sha256)
    except BaseException:
        writer.discard()
        raise
    log.info("fetched %s:%d (sha256 %s)", artifact.model, artifact.version, artifact.sha256)
