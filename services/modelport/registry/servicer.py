"""`modelport.registry.v1.ModelRegistry` over the transport-free `RegistryStore`.

Store calls block on the database and disk, so each runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import grpc

from modelport.common import tracing
from modelport.common.metrics import meter
from modelport.errors import Cancelled, FailedPrecondition, InvalidInput
from modelport.proto.modelport.registry.v1 import registry_pb2 as pb
from modelport.proto.modelport.registry.v1 import registry_pb2_grpc
from modelport.registry import convert
from modelport.registry.audit_log import DatabaseAuditLog
from modelport.registry.derive_executor import DeriveExecutor
from modelport.registry.derive_servicer import DeriveRpcs
from modelport.registry.records import VersionInfo
from modelport.registry.store import RegistryStore

log = logging.getLogger(__name__)
Context = grpc.aio.ServicerContext

DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 4 << 20
# Watchers also poll this often, so changes made by another registry process
# sharing the database still arrive.
WATCH_POLL_SECONDS = 1.0

_meter = meter("modelport.registry")
_uploads = _meter.create_counter("modelport_registry_uploads", description="Version uploads")
_downloads = _meter.create_counter("modelport_registry_downloads", description="Version downloads")
_subscribers = _meter.create_up_down_counter(
    "modelport_registry_watch_subscribers", description="Open Watch streams"
)


class RegistryServicer(DeriveRpcs, registry_pb2_grpc.ModelRegistryServicer):
    def __init__(
        self,
        store: RegistryStore,
        loop: asyncio.AbstractEventLoop,
        executor: DeriveExecutor | None = None,
        audit_log: DatabaseAuditLog | None = None,
    ) -> None:
        """`loop` is the server's: commits made in worker threads wake watchers on it.
        `executor` runs derive jobs (None: this registry runs none)."""
        self.store = store
        self.executor = executor
        self.audit_log = audit_log
        self._wakeups: set[asyncio.Event] = set()
        self._loop = loop
        self._closing = False
        store.add_listener(self._on_commit)

    def _on_commit(self, _revision: int) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for wakeup in self._wakeups:
            wakeup.set()

    def close(self) -> None:
        """End every Watch stream (at drain: they would otherwise hold the grace period)."""
        self._closing = True
        self._wake_all()

    # -- models --------------------------------------------------------------

    async def CreateModel(self, request: pb.CreateModelRequest, context: Context) -> pb.Model:
        info = await asyncio.to_thread(
            self.store.create_model, request.name, request.description, dict(request.labels)
        )
        return convert.model_msg(info)

    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.Model:
        return convert.model_msg(await asyncio.to_thread(self.store.get_model, request.name))

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        models, revision = await asyncio.to_thread(self.store.list_models)
        return pb.ListModelsResponse(
            models=[convert.model_msg(m) for m in models], revision=revision
        )

    async def DeleteModel(
        self, request: pb.DeleteModelRequest, context: Context
    ) -> pb.DeleteModelResponse:
        await asyncio.to_thread(self.store.delete_model, request.name, force=request.force)
        return pb.DeleteModelResponse()

    # -- versions --------------------------------------------------------------

    async def UploadVersion(
        self, request_iterator: AsyncIterator[pb.UploadVersionRequest], context: Context
    ) -> pb.ModelVersion:
        outcome = "error"
        try:
            with tracing.server_span("UploadVersion", context):
                info = await self._upload(request_iterator, context)
            outcome = "stored"
            log.info("stored %s:%d sha256=%s", info.model, info.version, info.sha256)
            return convert.version_msg(info)
        except InvalidInput:
            outcome = "invalid"
            raise
        finally:
            _uploads.add(1, {"outcome": outcome})

    async def _upload(
        self, request_iterator: AsyncIterator[pb.UploadVersionRequest], context: Context
    ) -> VersionInfo:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidInput("upload must start with a header message")
        header = first.header
        new = convert.new_version(header)
        if len(header.sha256) != 64:
            # Required: a cancelled stream ends like a complete one, and only
            # the digest of the whole archive tells the two apart.
            raise InvalidInput(f"model '{new.model}': upload header needs the sha256 (hex)")
        await asyncio.to_thread(self.store.check_upload, new)
        sink = self.store.open_upload()
        try:
            async for message in request_iterator:
                if message.WhichOneof("part") != "chunk":
                    raise InvalidInput(f"model '{new.model}': upload sent a second header")
                sink.write(message.chunk)
            if context.cancelled():
                raise Cancelled(f"model '{new.model}': upload cancelled by the client")
        except BaseException:
            sink.discard()
            raise
        # Shielded: once started, finishing runs to its end in its thread (it
        # stores the version or removes its temp files) even if the call is
        # cancelled meanwhile; a bare to_thread could be cancelled before it
        # starts and leave the upload's temp file behind.
        finishing = asyncio.get_running_loop().run_in_executor(
            None, self.store.finish_upload, sink, new, header.sha256
        )
        return await asyncio.shield(finishing)

    async def DownloadVersion(
        self, request: pb.DownloadVersionRequest, context: Context
    ) -> AsyncIterator[pb.DownloadVersionResponse]:
        chunk_bytes = min(request.chunk_bytes or DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES)
        started = time.time_ns()
        info, chunks = await asyncio.to_thread(self.store.open_download, request.ref, chunk_bytes)
        _downloads.add(1)
        yield pb.DownloadVersionResponse(
            header=pb.DownloadHeader(
                version=convert.version_msg(info), size_bytes=info.size_bytes, sha256=info.sha256
            )
        )
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield pb.DownloadVersionResponse(chunk=chunk)
        # Recorded afterwards: a span held open across a generator's yields
        # would be current in whatever code the stream interleaves with.
        tracing.record_span(
            "DownloadVersion",
            parent=tracing.extract_context(context),
            start_ns=started,
            end_ns=time.time_ns(),
            model=info.model,
            version=info.version,
            size_bytes=info.size_bytes,
        )

    async def GetVersion(self, request: pb.GetVersionRequest, context: Context) -> pb.ModelVersion:
        return convert.version_msg(await asyncio.to_thread(self.store.get_version, request.ref))

    async def ListVersions(
        self, request: pb.ListVersionsRequest, context: Context
    ) -> pb.ListVersionsResponse:
        versions = await asyncio.to_thread(self.store.list_versions, request.model)
        return pb.ListVersionsResponse(versions=[convert.version_msg(v) for v in versions])

    async def DeleteVersion(
        self, request: pb.DeleteVersionRequest, context: Context
    ) -> pb.DeleteVersionResponse:
        await asyncio.to_thread(self.store.delete_version, request.model, request.version)
        return pb.DeleteVersionResponse()

    # -- aliases ------------------------------------------------------------------

    async def SetAlias(self, request: pb.SetAliasRequest, context: Context) -> pb.Alias:
        info = await asyncio.to_thread(
            self.store.set_alias,
            request.model,
            request.alias,
            request.version,
            force=request.force,
        )
        return convert.alias_msg(info)

    async def DeleteAlias(
        self, request: pb.DeleteAliasRequest, context: Context
    ) -> pb.DeleteAliasResponse:
        await asyncio.to_thread(self.store.delete_alias, request.model, request.alias)
        return pb.DeleteAliasResponse()

    async def RollbackAlias(self, request: pb.RollbackAliasRequest, context: Context) -> pb.Alias:
        info = await asyncio.to_thread(self.store.rollback_alias, request.model, request.alias)
        return convert.alias_msg(info)

    async def ListAliasHistory(
        self, request: pb.ListAliasHistoryRequest, context: Context
    ) -> pb.ListAliasHistoryResponse:
        moves = await asyncio.to_thread(self.store.alias_history, request.model, request.alias)
        return pb.ListAliasHistoryResponse(moves=[convert.alias_move_msg(m) for m in moves])

    async def Resolve(self, request: pb.ResolveRequest, context: Context) -> pb.ResolveResponse:
        return convert.resolved_msg(await asyncio.to_thread(self.store.resolve, request.ref))

    # -- policies ----------------------------------------------------------------

    async def SetTrafficPolicy(
        self, request: pb.SetTrafficPolicyRequest, context: Context
    ) -> pb.TrafficPolicy:
        request.policy.model = request.model
        policy = convert.policy_from_msg(request.policy)
        stored = await asyncio.to_thread(self.store.set_policy, request.model, policy)
        return convert.policy_msg(request.model, stored)

    async def GetTrafficPolicy(
        self, request: pb.GetTrafficPolicyRequest, context: Context
    ) -> pb.TrafficPolicy:
        policy = await asyncio.to_thread(self.store.get_policy, request.model)
        return convert.policy_msg(request.model, policy)

    # -- pool placements -----------------------------------------------------------

    async def SetPoolPlacement(
        self, request: pb.SetPoolPlacementRequest, context: Context
    ) -> pb.PoolPlacement:
        model = request.placement.model
        placement = convert.placement_from_msg(request.placement)
        stored = await asyncio.to_thread(self.store.placements.set, model, placement)
        return convert.placement_msg(model, stored)

    async def GetPoolPlacement(
        self, request: pb.GetPoolPlacementRequest, context: Context
    ) -> pb.PoolPlacement:
        placement = await asyncio.to_thread(self.store.placements.get, request.model)
        return convert.placement_msg(request.model, placement)

    async def ListPoolPlacements(
        self, request: pb.ListPoolPlacementsRequest, context: Context
    ) -> pb.ListPoolPlacementsResponse:
        # The revision first: a change after it is replayed by a Watch from it.
        revision = await asyncio.to_thread(self.store.current_revision)
        placements = await asyncio.to_thread(self.store.placements.list)
        return pb.ListPoolPlacementsResponse(
            placements=[convert.placement_msg(m, p) for m, p in placements.items()],
            revision=revision,
        )

    # -- audit -------------------------------------------------------------------

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Context
    ) -> pb.ListAuditEventsResponse:
        if self.audit_log is None:
            raise FailedPrecondition("this registry keeps no audit log")
        events = await asyncio.to_thread(self.audit_log.query, convert.audit_query(request))
        return pb.ListAuditEventsResponse(events=[convert.audit_event_msg(e) for e in events])

    # -- watch -------------------------------------------------------------------

    async def Watch(
        self, request: pb.WatchRequest, context: Context
    ) -> AsyncIterator[pb.WatchEvent]:
        if request.after_revision < 0:
            raise InvalidInput("watch: after_revision must be 0 or more")
        after = request.after_revision
        models = frozenset(request.models)
        wakeup = asyncio.Event()
        self._wakeups.add(wakeup)
        _subscribers.add(1)
        caught_up = False
        limit = 500
        try:
            while not self._closing:
                wakeup.clear()
                events = await asyncio.to_thread(self.store.events_after, after, models, limit)
                for event in events:
                    yield convert.event_msg(event)
                    after = event.revision
                if len(events) == limit:
                    continue
                if not caught_up:
                    caught_up = True
                    yield pb.WatchEvent(revision=after, kind=pb.WatchEvent.CAUGHT_UP)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), WATCH_POLL_SECONDS)
        finally:
            self._wakeups.discard(wakeup)
            _subscribers.add(-1)


def register(server: grpc.aio.Server, servicer: RegistryServicer) -> None:
    registry_pb2_grpc.add_ModelRegistryServicer_to_server(servicer, server)


SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ModelRegistry"].full_name
