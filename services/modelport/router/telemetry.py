"""Router metrics. Hot-path counts live in plain counters (`RouterStats`,
`RouterServicer.outcomes`, each replica's in-flight count) and are read by
observable instruments at scrape time, so a forwarded request pays for one
histogram record and a few dict increments, not for half a dozen instruments.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from modelport.common.metrics import meter
from modelport.router.forwarding import Router
from modelport.router.servicer import RouterServicer


def install(router: Router, servicer: RouterServicer) -> None:
    m = meter("modelport.router")
    stats = router.stats
    table = router.table

    def requests(_: CallbackOptions) -> Iterable[Observation]:
        for (model, code), count in list(servicer.outcomes.items()):
            yield Observation(count, {"model": model, "code": code})

    def in_flight(_: CallbackOptions) -> Iterable[Observation]:
        for replica in list(table.replicas.values()):
            for model in replica.models:
                yield Observation(replica.in_flight, {"model": model, "replica": replica.address})

    def counted(counter: Any, labels: tuple[str, ...]) -> Any:
        def callback(_: CallbackOptions) -> Iterable[Observation]:
            for key, count in list(counter.items()):
                values = key if isinstance(key, tuple) else (key,)
                yield Observation(count, dict(zip(labels, values, strict=True)))

        return callback

    m.create_observable_counter("modelport_router_requests", [requests])
    m.create_observable_gauge("modelport_router_replica_in_flight", [in_flight])
    m.create_observable_counter(
        "modelport_router_picks", [counted(stats.picks, ("model", "replica"))]
    )
    m.create_observable_counter("modelport_router_retries", [counted(stats.retries, ("model",))])
    m.create_observable_counter(
        "modelport_router_ejections", [counted(stats.ejections, ("model", "replica"))]
    )
    m.create_observable_counter(
        "modelport_router_policy_splits", [counted(stats.splits, ("model", "alias"))]
    )
    m.create_observable_counter(
        "modelport_router_shadow_errors", [counted(stats.shadow_errors, ("model",))]
    )
    duration = m.create_histogram("modelport_router_request_duration", unit="s")

    def record(model: str, seconds: float) -> None:
        duration.record(seconds, {"model": model})

    servicer.on_duration = record
