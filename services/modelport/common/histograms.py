"""Histograms for the hot path: a bucket array per label set, exported as Prometheus text.

An OpenTelemetry SDK `Histogram.record` costs 15-40 µs of CPU (attribute
hashing, exemplar filters, locks); on the inference path that was 60-100 µs
of a ~400 µs request (benchmarks/README.md). A record here is a bisect and two
additions. Each histogram is a prometheus_client collector in the registry
the OpenTelemetry exporter serves, so `/metrics` shows both on one page with
the usual `_bucket{le=...}`, `_sum` and `_count` series.

Records come from one thread (the event loop); a scrape reads a snapshot of
lists that are only ever appended to or incremented, which is safe under the GIL.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence

from prometheus_client.core import REGISTRY, HistogramMetricFamily

_lock = threading.Lock()
_registered: dict[str, BucketHistogram] = {}


class BucketHistogram:
    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], bounds: Sequence[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.bounds = tuple(bounds)
        # label values -> [count per bucket ..., +Inf count, sum]
        self.series: dict[tuple[str, ...], list[float]] = {}

    def row(self, key: tuple[str, ...]) -> list[float]:
        """The series of `key`, to keep and `observe` into (saves a dict lookup)."""
        row = self.series.get(key)
        if row is None:
            row = self.series[key] = [0.0] * (len(self.bounds) + 2)
        return row

    def observe(self, row: list[float], value: float) -> None:
        row[bisect.bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def record(self, key: tuple[str, ...], value: float) -> None:
        self.observe(self.row(key), value)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        edges = [*(str(b) for b in self.bounds), "+Inf"]
        for key, row in list(self.series.items()):
            cumulative, buckets = 0.0, []
            for edge, count in zip(edges, row[:-1], strict=True):
                cumulative += count
                buckets.append((edge, cumulative))
            family.add_metric(list(key), buckets, row[-1])
        yield family


def histogram(
    name: str, documentation: str, labels: Sequence[str], bounds: Sequence[float]
) -> BucketHistogram:
    """The process's histogram called `name` (a registry takes a name once)."""
    with _lock:
        existing = _registered.get(name)
        if existing is None:
            existing = _registered[name] = BucketHistogram(name, documentation, labels, bounds)
            REGISTRY.register(existing)
        return existing
