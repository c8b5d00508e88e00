"""Traffic policies and aliases from the registry, kept current by its Watch stream.

On connect: ListModels (aliases of every model, and the revision it was read
at), GetTrafficPolicy for each model and ListPoolPlacements (the models the
pool serves); then Watch from that revision. Alias events update the alias
table directly; a POLICY_CHANGED or POOL_CHANGED event re-reads that model's
policy or pool placement. Every change publishes a new `RoutingState` at once, so a
policy set in the registry is in force at the router well within a second.
When the registry goes away the last published state stays in force; the
source reconnects with backoff and resumes the watch from the last revision.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from modelport.common.tls import ChannelMaker
from modelport.proto.modelport.registry.v1 import registry_pb2 as rpb
from modelport.proto.modelport.registry.v1 import registry_pb2_grpc as rpb_grpc
from modelport.router.policies import MemberRef, OnState, RoutingState, TrafficPolicy

log = logging.getLogger(__name__)

Kind = rpb.WatchEvent.Kind


def policy_from_message(message: Any) -> TrafficPolicy:
    kind = message.WhichOneof("kind")
    members: tuple[MemberRef, ...] = ()
    if kind == "ensemble":
        members = tuple(MemberRef.parse(m) for m in message.ensemble.members)
    return TrafficPolicy(
        split=tuple((s.alias, int(s.weight)) for s in message.split),
        shadow_alias=message.shadow_alias,
        ensemble=members,
        scatter=kind == "scatter",
        revision=int(message.revision),
    )


class RegistryPolicySource:
    def __init__(
        self,
        address: str,
        retry_seconds: float = 0.5,
        max_retry_seconds: float = 10.0,
        channels: ChannelMaker | None = None,
    ) -> None:
        self.address = address
        # Plaintext unless upstream TLS is configured (or the address is grpcs://).
        self.channels = channels or ChannelMaker()
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.policies: dict[str, TrafficPolicy] = {}
        self.aliases: dict[str, dict[str, str]] = {}
        self.revision = 0
        # model -> memory estimate (bytes); None: a registry older than pool
        # placements (UNIMPLEMENTED), so the pool takes any model, as before.
        self.pooled: dict[str, int] | None = {}
        self.connected = asyncio.Event()

    def _state(self) -> RoutingState:
        return RoutingState(
            policies=dict(self.policies),
            aliases={model: dict(table) for model, table in self.aliases.items()},
            revision=self.revision,
            pooled=None if self.pooled is None else dict(self.pooled),
        )

    async def _policy(self, stub: Any, model: str) -> TrafficPolicy:
        try:
            message = await stub.GetTrafficPolicy(
                rpb.GetTrafficPolicyRequest(model=model), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return TrafficPolicy()
            raise
        return policy_from_message(message)

    async def _placement(self, stub: Any, model: str) -> Any:
        try:
            return await stub.GetPoolPlacement(rpb.GetPoolPlacementRequest(model=model), timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return rpb.PoolPlacement(model=model)
            raise

    async def _snapshot(self, stub: Any) -> None:
        listing = await stub.ListModels(rpb.ListModelsRequest(), timeout=10)
        try:
            placements = await stub.ListPoolPlacements(rpb.ListPoolPlacementsRequest(), timeout=10)
            self.pooled = {p.model: int(p.memory_bytes) for p in placements.placements}
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            self.pooled = None
        policies = {}
        for model in listing.models:
            policy = await self._policy(stub, model.name)
            if not policy.is_empty():
                policies[model.name] = policy
        self.aliases = {
            m.name: {alias: str(version) for alias, version in m.aliases.items()}
            for m in listing.models
        }
        self.policies = policies
        self.revision = int(listing.revision)

    async def _apply(self, stub: Any, event: Any) -> bool:
        """Fold one event into the state; True when routing may have changed."""
        self.revision = max(self.revision, int(event.revision))
        model = event.model
        if event.kind == Kind.ALIAS_MOVED:
            self.aliases.setdefault(model, {})[event.alias] = str(event.version)
        elif event.kind == Kind.ALIAS_DELETED:
            self.aliases.get(model, {}).pop(event.alias, None)
        elif event.kind == Kind.POLICY_CHANGED:
            policy = await self._policy(stub, model)
            if policy.is_empty():
                self.policies.pop(model, None)
            else:
                self.policies[model] = policy
        elif event.kind == Kind.POOL_CHANGED and self.pooled is not None:
            placement = await self._placement(stub, model)
            if placement.pooled:
                self.pooled[model] = int(placement.memory_bytes)
            else:
                self.pooled.pop(model, None)
        elif event.kind == Kind.MODEL_DELETED:
            self.aliases.pop(model, None)
            self.policies.pop(model, None)
            if self.pooled is not None:
                self.pooled.pop(model, None)
        else:
            return False
        return True

    async def run(self, on_state: OnState) -> None:
        delay = self.retry_seconds
        while True:
            try:

                async def follow(channel: grpc.aio.Channel) -> None:
                    nonlocal delay
                    stub: rpb_grpc.ModelRegistryAsyncStub = (
                        rpb_grpc.ModelRegistryStub(channel)  # type: ignore[assignment]
                    )
                    if not self.connected.is_set():
                        await self._snapshot(stub)
                        on_state(self._state())
                    self.connected.set()
                    watch = stub.Watch(rpb.WatchRequest(after_revision=self.revision))
                    async for event in watch:
                        delay = self.retry_seconds
                        if await self._apply(stub, event):
                            on_state(self._state())

                if await self.channels.run_with(self.address, follow):
                    continue  # client certificates rotated: dial again at once
                raise ConnectionError("registry ended the watch")
            except (grpc.aio.AioRpcError, ConnectionError) as exc:
                # Keep what we have: the last known policy stays in force.
                log.warning(
                    "registry %s: %s; retrying in %.1f s",
                    self.address,
                    exc.details() if isinstance(exc, grpc.aio.AioRpcError) else exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_seconds)
