"""What the router's fast path may forward, and what it reports back (transport-free).

The fast path (`modelport-fastpath`, services/fastpath) forwards a ModelInfer
call itself only when the Python router's handling of it would be a pure
pick-and-forward: the reference (`model_version` as sent) resolves to one
version without a traffic policy, replicas take traffic for that version, the
model is not held for scale-from-zero nor placed on the pool, and the request
names no sequence (the fast path checks that one). `snapshot` writes, per
model, exactly those references and their replicas, resolved by the router's
own `Planner` (so an alias move waits for a replica serving the new version
here too); everything else is relayed to the Python router, which answers
it with its usual words.

`apply_report` adds what the fast path counted to the router's own books
(outcomes, picks, retries, ejections, the latency histogram), so `/metrics`
and `modelport routes` count every request wherever it was forwarded.
"""

from __future__ import annotations

from typing import Any

from modelport.common.histograms import BucketHistogram
from modelport.router.forwarding import Router
from modelport.router.policies import DEFAULT_ALIAS
from modelport.router.pool_routing import POOL_MODEL


def snapshot(router: Router) -> dict[str, Any]:
    """{"routes": {model: {"refs": {ref: version}, "replicas": {version: [address]}}},
    "ejected": [address]}: the routes the fast path may take, nothing else."""
    table, scaling = router.table, router.scaling
    routes: dict[str, Any] = {}
    for model in sorted(table.known_models()):
        if model == POOL_MODEL or (scaling is not None and scaling.holds(model)):
            continue
        route = _model_routes(router, model)
        if route["refs"]:
            routes[model] = route
    now = table.clock()
    ejected = sorted(r.address for r in table.replicas.values() if r.is_ejected(now))
    return {"routes": routes, "ejected": ejected}


def _model_routes(router: Router, model: str) -> dict[str, Any]:
    table, planner = router.table, router.planner
    refs: dict[str, str] = {}
    replicas: dict[str, list[str]] = {}

    def offer(ref: str, version: str) -> None:
        candidates = table.candidates(model, version)
        if candidates:
            refs[ref] = version
            replicas[version] = sorted(r.address for r in candidates)

    if planner.policy(model).is_empty():  # else a policy decides "" (split, shadow, ...)
        offer("", planner.alias_version(model, DEFAULT_ALIAS) or "")
    for alias in sorted(planner.state.aliases.get(model, {})):
        version = planner.alias_version(model, alias)
        if version is not None and not alias.isdigit():  # a number means a version
            offer(alias, version)
    served: set[str] = set()
    for replica in table.replicas.values():
        served |= (replica.versions or {}).get(model, frozenset())
    for version in sorted(served):
        offer(version, version)
    return {"refs": refs, "replicas": replicas}


def status_name(go_code: str) -> str:
    """grpc-go's code names ('DeadlineExceeded') as the router's ('DEADLINE_EXCEEDED')."""
    if go_code in ("OK", "Canceled"):
        return "OK" if go_code == "OK" else "CANCELLED"
    out = []
    for i, char in enumerate(go_code):
        if char.isupper() and i:
            out.append("_")
        out.append(char.upper())
    return "".join(out)


def apply_report(
    router: Router, report: dict[str, Any], latency: BucketHistogram | None = None
) -> None:
    """Count what the fast path reported (deltas since its last report)."""
    stats, replicas = router.stats, router.table.replicas
    for model, code, count in report.get("outcomes") or ():
        name = status_name(str(code))
        stats.outcomes[(model, name)] += int(count)
        stats.fast_path[(model, name)] += int(count)
    for model, address, count in report.get("picks") or ():
        stats.picks[(model, address)] += int(count)
        replica = replicas.get(address)
        if replica is not None:
            replica.picks += int(count)
    for model, address, count in report.get("ejections") or ():
        stats.ejections[(model, address)] += int(count)
    for model, count in (report.get("retries") or {}).items():
        stats.retries[model] += int(count)
    if latency is not None:
        width = len(latency.bounds) + 2
        for model, counts in (report.get("latency") or {}).items():
            if len(counts) == width:
                row = latency.row((model,))
                for i, count in enumerate(counts):
                    row[i] += count
