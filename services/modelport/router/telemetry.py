"""Router metrics. Hot-path counts live in plain counters (`RouterStats`, each
replica's in-flight count) and are read by
observable instruments at scrape time. The latency histogram is a bucket
array served by a prometheus_client collector in the same registry the OTel
exporter uses: an OTel histogram record costs ~15 µs, which is several
percent of the router's whole CPU budget per request; a bisect costs <1 µs.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from prometheus_client.core import REGISTRY, HistogramMetricFamily

from modelport.common.metrics import LATENCY_BUCKETS, meter
from modelport.router.forwarding import Router
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


_histogram: LatencyHistogram | None = None


def latency_histogram() -> LatencyHistogram:
    """The process's one histogram (a registry accepts a metric name once)."""
    global _histogram
    if _histogram is None:
        _histogram = LatencyHistogram()
        REGISTRY.register(_histogram)
    return _histogram


class LatencyHistogram:
    """modelport_router_request_duration_seconds{model}, cheap to record."""

    name = "modelport_router_request_duration_seconds"

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        # model -> [count per bucket..., +Inf count, sum]
        self.series: dict[str, list[float]] = {}

    def record(self, model: str, seconds: float) -> None:
        row = self.series.get(model)
        if row is None:
            row = self.series[model] = [0.0] * (len(self.bounds) + 2)
        row[bisect.bisect_left(self.bounds, seconds)] += 1
        row[-1] += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            self.name, "Time the router took to answer a request.", labels=["model"]
        )
        for model, row in list(self.series.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip((*self.bounds, float("inf")), row[:-1], strict=True):
                cumulative += count
                buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
            family.add_metric([model], buckets, row[-1])
        yield family
