"""Router metrics. Hot-path counts live in plain counters (`RouterStats`, each
replica's in-flight count) and are read by
observable instruments at scrape time. The latency histogram is a bucket
array (common/histograms) served in the same registry the OTel exporter uses:
an OTel histogram record costs ~15 µs, which is several percent of the
router's whole CPU budget per request; a bisect costs <1 µs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from modelport.common import histograms
from modelport.common.histograms import BucketHistogram
from modelport.common.metrics import LATENCY_BUCKETS, meter
from modelport.router.forwarding import UNKNOWN_MODEL, Router
from modelport.router.placement import PlacementStats
from modelport.router.scale_from_zero import ScaleFromZero


def install(router: Router) -> None:
    m = meter("modelport.router")
    stats = router.stats
    table = router.table

    def requests(_: CallbackOptions) -> Iterable[Observation]:
        for (model, code), count in list(stats.outcomes.items()):
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

    m.create_observable_counter(
        "modelport_router_requests",
        [requests],
        description=f"Requests answered, by model and status code (model {UNKNOWN_MODEL}: "
        "names no replica serves)",
    )
    m.create_observable_gauge(
        "modelport_router_replica_in_flight",
        [in_flight],
        description="Requests the router has in flight on each replica",
    )
    m.create_observable_counter(
        "modelport_router_fast_path_requests",
        [counted(stats.fast_path, ("model", "code"))],
        description="The requests of modelport_router_requests that the fast path "
        "(modelport-fastpath) forwarded itself",
    )
    m.create_observable_counter(
        "modelport_router_picks",
        [counted(stats.picks, ("model", "replica"))],
        description="Requests sent to each replica (retries included)",
    )
    m.create_observable_counter(
        "modelport_router_retries",
        [counted(stats.retries, ("model",))],
        description="Requests retried on another replica after UNAVAILABLE",
    )
    m.create_observable_counter(
        "modelport_router_ejections",
        [counted(stats.ejections, ("model", "replica"))],
        description="Times a replica was taken out of rotation after repeated failures",
    )
    m.create_observable_counter(
        "modelport_router_policy_splits",
        [counted(stats.splits, ("model", "alias"))],
        description="Requests a weighted split sent to each alias",
    )
    m.create_observable_counter(
        "modelport_router_shadow_errors",
        [counted(stats.shadow_errors, ("model",))],
        description="Shadow copies that failed (the caller was answered)",
    )
    m.create_observable_counter(
        "modelport_router_shadow_dropped",
        [counted(stats.shadow_dropped, ("model",))],
        description="Shadow copies not sent because too many were in flight",
    )
    if router.scaling is not None:
        install_scaling(m, router.scaling)
    if router.pool is not None:
        install_pool(m, router.pool.placer.stats)


def install_pool(m: Any, stats: PlacementStats) -> None:
    """Placements on pool replicas: hit (ready there), miss (load), join, spread."""

    def placements(_: CallbackOptions) -> Iterable[Observation]:
        for outcome, counter in (("hit", stats.hits), ("miss", stats.misses),
                                 ("join", stats.joins), ("spread", stats.spreads)):  # fmt: skip
            for model, count in list(counter.items()):
                yield Observation(count, {"model": model, "outcome": outcome})

    m.create_observable_counter(
        "modelport_router_pool_placements",
        [placements],
        description="Requests placed on pool replicas, by outcome (hit, miss, join, spread).",
    )


def install_scaling(m: Any, scaling: ScaleFromZero) -> None:
    """Held requests per model, demand as KEDA sees it, and cold starts by phase."""
    queue, demand = scaling.queue, scaling.demand

    def held(_: CallbackOptions) -> Iterable[Observation]:
        for model in sorted(scaling.models):
            yield Observation(queue.held(model), {"model": model})

    def active(_: CallbackOptions) -> Iterable[Observation]:
        for model in sorted(scaling.models):
            yield Observation(int(demand.is_active(model)), {"model": model})

    m.create_observable_gauge(
        "modelport_router_held_requests",
        [held],
        description="Requests held at the router while their model has no ready replica.",
    )
    m.create_observable_gauge(
        "modelport_router_model_active",
        [active],
        description="1 while a scale-to-zero model has demand (what KEDA's IsActive answers).",
    )
    cold = m.create_histogram(
        "modelport_router_cold_start_seconds",
        unit="s",
        description="Cold starts seen by held requests, by phase (replica, load, …, total).",
    )
    scaling.on_cold_start = lambda model, phase, seconds: cold.record(
        seconds, {"model": model, "phase": phase}
    )


def latency_histogram() -> BucketHistogram:
    """modelport_router_request_duration_seconds{model}: the process's one."""
    return histograms.histogram(
        "modelport_router_request_duration_seconds",
        "Time the router took to answer a request.",
        ("model",),
        LATENCY_BUCKETS,
    )


def recorder(histogram: BucketHistogram) -> Callable[[str, float], None]:
    """What the Router calls per request: (model, seconds)."""
    rows: dict[str, list[float]] = {}

    def record(model: str, seconds: float) -> None:
        row = rows.get(model)
        if row is None:
            row = rows[model] = histogram.row((model,))
        histogram.observe(row, seconds)

    return record
