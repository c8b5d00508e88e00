"""`modelport.router.v1.RouterAdmin`: what `modelport routes` shows."""

from __future__ import annotations

import grpc

from modelport.proto.modelport.pool.v1.pool_pb2 import ModelLoad, PoolState
from modelport.proto.modelport.router.v1 import router_pb2 as rpb
from modelport.proto.modelport.router.v1 import router_pb2_grpc as rpb_grpc
from modelport.router.forwarding import Router
from modelport.router.pool_routing import POOL_MODEL


class RouterAdminServicer(rpb_grpc.RouterAdminServicer):
    def __init__(
        self,
        router: Router,
        pool_reports: dict[str, PoolState] | None = None,
        loads: dict[str, list[ModelLoad]] | None = None,
    ) -> None:
        self.router = router
        # address -> the last state each pool replica pushed (see `pool_watch`).
        self.pool_reports = pool_reports if pool_reports is not None else {}
        # address -> the models each replica reported on their way.
        self.loads = loads if loads is not None else {}

    async def ListRoutes(
        self, request: rpb.ListRoutesRequest, context: grpc.aio.ServicerContext
    ) -> rpb.ListRoutesResponse:
        table = self.router.table
        planner = self.router.planner
        now = table.clock()
        pool = self.router.pool
        on_pool = {m for r in pool.placer.replicas.values() for m in r.models} if pool else set()
        scaling = self.router.scaling
        held = set(scaling.models) if scaling else set()
        models = sorted(table.known_models() | set(planner.state.policies) | on_pool | held)
        models = [m for m in models if m != POOL_MODEL]
        if request.model_name:
            models = [m for m in models if m == request.model_name]
        answer = rpb.ListRoutesResponse()
        for model in models:
            route = answer.models.add(name=model)
            for address, loads in sorted(self.loads.items()):
                for load in loads:
                    if load.name == model:
                        route.loading.add(
                            address=address, version=load.version,
                            phase=ModelLoad.Phase.Name(load.phase),
                            phase_seconds=load.phase_seconds, total_seconds=load.total_seconds,
                        )  # fmt: skip
            for replica in sorted(table.replicas.values(), key=lambda r: r.address):
                if model not in replica.models:
                    continue
                route.replicas.add(
                    address=replica.address,
                    ready=replica.ready,
                    terminating=replica.terminating,
                    ejected=replica.is_ejected(now),
                    versions=sorted((replica.versions or {}).get(model, ()), key=_version_key),
                    in_flight=replica.in_flight,
                    picks=replica.picks,
                )
            policy = planner.policy(model)
            view = route.policy
            view.revision = policy.revision
            view.shadow_alias = policy.shadow_alias
            view.scatter = policy.scatter
            view.ensemble_members.extend(str(m) for m in policy.ensemble)
            for alias, weight in policy.split:
                view.split.add(alias=alias, weight=weight)
            for alias, target in planner.state.aliases.get(model, {}).items():
                route.aliases[alias] = planner.alias_version(model, alias) or target
            for alias, (target, _) in planner.waiting(model).items():
                route.waiting[alias] = target
            named = [a for a, _ in policy.split] + [policy.shadow_alias] * bool(policy.shadow_alias)
            route.unserved_aliases.extend(a for a in named if not planner.is_served(model, a))
            if scaling is not None:
                route.held = scaling.queue.held(model)
            if pool is not None:
                stats = pool.placer.stats
                route.pool_hits, route.pool_misses = stats.hits[model], stats.misses[model]
                route.pooled = pool.pooled is not None and model in pool.pooled
                for address, pooled in sorted(pool.placer.replicas.items()):
                    copy = pooled.models.get(model)
                    if copy is not None:
                        route.pool.add(
                            address=address,
                            state=copy.state,
                            size_bytes=copy.size_bytes,
                            in_flight=copy.in_flight,
                            version=copy.version,
                            priority=copy.priority,
                        )
        for address, state in sorted(self.pool_reports.items()):
            answer.pool_replicas.add(
                address=address, budget_bytes=state.budget_bytes, used_bytes=state.used_bytes,
                models=len(state.models), hits=state.hits, loads=state.loads,
                evictions=state.evictions, load_seconds=state.load_seconds,
            )  # fmt: skip
        return answer


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)
