"""`modelport.router.v1.RouterAdmin`: what `modelport routes` shows."""

from __future__ import annotations

import grpc

from modelport.proto.modelport.router.v1 import router_pb2 as rpb
from modelport.proto.modelport.router.v1 import router_pb2_grpc as rpb_grpc
from modelport.router.forwarding import Router


class RouterAdminServicer(rpb_grpc.RouterAdminServicer):
    def __init__(self, router: Router) -> None:
        self.router = router

    async def ListRoutes(
        self, request: rpb.ListRoutesRequest, context: grpc.aio.ServicerContext
    ) -> rpb.ListRoutesResponse:
        table = self.router.table
        planner = self.router.planner
        now = table.clock()
        models = sorted(table.known_models() | set(planner.state.policies))
        if request.model_name:
            models = [m for m in models if m == request.model_name]
        answer = rpb.ListRoutesResponse()
        for model in models:
            route = answer.models.add(name=model)
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
            route.aliases.update(planner.state.aliases.get(model, {}))
        return answer


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)
