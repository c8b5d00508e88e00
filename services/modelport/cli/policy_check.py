"""`models policy`'s check of what a policy names against what is served.

The registry knows which version each alias names; only the router knows which
versions ready replicas serve. So the CLI asks both: the registry resolves each
alias the policy sends traffic to (split and shadow), the router's ListRoutes
says what its ready replicas report. An alias with no version, or whose version
no ready replica serves, takes no traffic (the router keeps it where it is
served) — legal mid-rollout, so a warning, never a refusal. Asking the registry
to check would need it to know the fleet; asking the router alone would race its
policy watch (the new policy may not have reached it yet).
"""

from __future__ import annotations

from typing import Any

import grpc

from modelport.cli.connection import Connection
from modelport.client.channel import ModelportClientError, sync_channel


def named_aliases(policy: Any) -> list[str]:
    aliases = [s.alias for s in policy.split]
    if policy.shadow_alias:
        aliases.append(policy.shadow_alias)
    return list(dict.fromkeys(aliases))


def served_versions(router: str, connection: Connection, model: str) -> set[str]:
    """Versions of `model` that a replica taking traffic reports READY."""
    from modelport.proto.modelport.router.v1 import router_pb2, router_pb2_grpc

    with sync_channel(router, connection.tls, connection.api_key) as channel:
        answer = router_pb2_grpc.RouterAdminStub(channel).ListRoutes(
            router_pb2.ListRoutesRequest(model_name=model), timeout=5
        )
    served: set[str] = set()
    for route in answer.models:
        if route.name != model:
            continue
        for replica in route.replicas:
            if replica.ready and not replica.terminating and not replica.ejected:
                served.update(replica.versions)
    return served


def unserved_warnings(
    client: Any, router: str, connection: Connection, model: str, policy: Any, *, asked: bool
) -> list[str]:
    """One line per alias of the policy that would take no traffic now.

    `asked`: the router was named (flag or variable); a default router that is
    not there is no news (a registry used without a local router).
    """
    aliases = named_aliases(policy)
    if not aliases or not router:
        return []
    try:
        served = served_versions(router, connection, model)
    except grpc.RpcError as exc:
        if not asked:
            return []
        code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
        return [f"router {router} not reachable ({code}): which aliases are served was not "
                "checked"]  # fmt: skip
    warnings = []
    for alias in aliases:
        try:
            version = str(client.resolve(f"{model}@{alias}").version)
        except ModelportClientError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            warnings.append(f"alias '{alias}' names no version of '{model}' yet: it takes no "
                            "traffic until it does and a replica serves it")  # fmt: skip
            continue
        if version not in served:
            where = f"'{model}@{alias}' (version {version})"
            warnings.append(f"no ready replica behind router {router} serves {where}: its "
                            "traffic stays where it is served")  # fmt: skip
    return warnings
