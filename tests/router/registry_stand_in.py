"""A stand-in for the registry's ModelRegistry service, for router policy tests.

It implements only what the router reads (ListModels, GetTrafficPolicy, Watch)
over the real contract, with changes driven by the test. Each change gets the
next revision and is replayed to watchers that resume from an older one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from modelport.proto.modelport.registry.v1 import registry_pb2 as rpb
from modelport.proto.modelport.registry.v1 import registry_pb2_grpc as rpb_grpc


class RegistryStandIn(rpb_grpc.ModelRegistryServicer):
    def __init__(self) -> None:
        self.revision = 0
        self.aliases: dict[str, dict[str, int]] = {}
        self.policies: dict[str, rpb.TrafficPolicy] = {}
        self.events: list[rpb.WatchEvent] = []
        self.changed = asyncio.Condition()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def _event(self, **fields: Any) -> None:
        async with self.changed:
            self.revision += 1
            self.events.append(rpb.WatchEvent(revision=self.revision, **fields))
            self.changed.notify_all()

    async def set_alias(self, model: str, alias: str, version: int) -> None:
        self.aliases.setdefault(model, {})[alias] = version
        await self._event(
            kind=rpb.WatchEvent.ALIAS_MOVED, model=model, alias=alias, version=version
        )

    async def set_policy(self, model: str, policy: rpb.TrafficPolicy) -> None:
        self.aliases.setdefault(model, {})
        policy.model = model
        policy.revision = self.revision + 1
        self.policies[model] = policy
        await self._event(kind=rpb.WatchEvent.POLICY_CHANGED, model=model)

    async def ListModels(self, request: Any, context: Any) -> Any:
        answer = rpb.ListModelsResponse(revision=self.revision)
        for name, aliases in sorted(self.aliases.items()):
            answer.models.add(name=name, aliases=aliases)
        return answer

    async def GetTrafficPolicy(self, request: Any, context: Any) -> Any:
        if request.model not in self.aliases:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model '{request.model}' unknown")
        return self.policies.get(request.model, rpb.TrafficPolicy(model=request.model))

    async def Watch(self, request: Any, context: Any) -> Any:
        sent = request.after_revision
        while True:
            async with self.changed:
                while self.revision <= sent:
                    await self.changed.wait()
                fresh = [e for e in self.events if e.revision > sent]
            for event in fresh:
                sent = event.revision
                yield event

    async def start(self, port: int = 0) -> str:
        self.server = grpc.aio.server()
        rpb_grpc.add_ModelRegistryServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        await self.server.start()
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
