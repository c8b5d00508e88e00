"""Per-version statistics: Triton's ModelStatistics counters and the Prometheus metrics.

Updated only from the event loop thread, so plain integers suffice. Every
version keeps its rows of the process-wide histograms, so a record is a
bisect and two additions.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from opentelemetry.metrics import CallbackOptions, Observation

from modelport.common import histograms, metrics


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


class _Instruments:
    """Process-wide, shared by every model version. Request counts are plain
    counters read at scrape time and histograms are bucket arrays
    (common/histograms): an OpenTelemetry record per request cost more than
    the rest of the batching path (benchmarks/README.md)."""

    def __init__(self) -> None:
        # (model, version, outcome, code) -> requests; kept after a version retires.
        self.requests: Counter[tuple[str, str, str, str]] = Counter()

        def per_version(
            name: str, documentation: str, bounds: tuple[float, ...]
        ) -> histograms.BucketHistogram:
            return histograms.histogram(name, documentation, ("model", "version"), bounds)

        latency = metrics.LATENCY_BUCKETS
        self.request_duration = per_version(
            "modelport_inference_request_duration_seconds", "Time in the server", latency
        )
        self.queue_duration = per_version(
            "modelport_inference_queue_duration_seconds", "Time waiting for a batch", latency
        )
        self.compute_duration = per_version(
            "modelport_inference_compute_duration_seconds", "Model execution time", latency
        )
        self.batch_size = per_version(
            "modelport_inference_batch_size", "Rows per model execution", metrics.BATCH_BUCKETS
        )
        self.live: set[VersionStats] = set()
        meter = metrics.meter("modelport.inference")
        meter.create_observable_counter(
            "modelport_inference_requests",
            callbacks=[self._observe_requests],
            description="Inference requests answered",
        )
        meter.create_observable_gauge(
            "modelport_inference_in_flight",
            callbacks=[self._observe_in_flight],
            description="Requests received and not yet answered",
        )
        meter.create_observable_gauge(
            "modelport_inference_queue_depth",
            callbacks=[self._observe_queue],
            description="Requests waiting for an executor",
        )

    def _observe_requests(self, _options: CallbackOptions) -> list[Observation]:
        return [
            Observation(count, {"model": m, "version": v, "outcome": o, "code": c})
            for (m, v, o, c), count in list(self.requests.items())
        ]

    def _observe_in_flight(self, _options: CallbackOptions) -> list[Observation]:
        return [Observation(s.in_flight, s.attributes) for s in list(self.live)]

    def _observe_queue(self, _options: CallbackOptions) -> list[Observation]:
        return [Observation(s.queue_depth, s.attributes) for s in list(self.live)]


_instruments: _Instruments | None = None


def instruments() -> _Instruments:
    global _instruments
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


class VersionStats:
    """Counters of one served model version."""

    def __init__(self, model: str, version: int) -> None:
        self.model = model
        self.version = str(version)
        self.attributes = {"model": model, "version": self.version}
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.batches: dict[int, BatchStats] = defaultdict(BatchStats)
        self.in_flight = 0
        self.queue_depth = 0
        inst = self._inst = instruments()
        inst.live.add(self)
        key = (model, self.version)
        self._ok_key = (*key, "success", "OK")
        self._request_row = inst.request_duration.row(key)
        self._queue_row = inst.queue_duration.row(key)
        self._compute_row = inst.compute_duration.row(key)
        self._batch_row = inst.batch_size.row(key)

    def close(self) -> None:
        self._inst.live.discard(self)

    def request_done(self, ns: int) -> None:
        self.success.add(ns)
        self.last_inference_ms = int(time.time() * 1000)
        inst = self._inst
        inst.requests[self._ok_key] += 1
        inst.request_duration.observe(self._request_row, ns / 1e9)

    def request_failed(self, ns: int, code: str) -> None:
        self.fail.add(ns)
        inst = self._inst
        inst.requests[(self.model, self.version, "failure", code)] += 1
        inst.request_duration.observe(self._request_row, ns / 1e9)

    def queued(self, ns: int) -> None:
        self.queue.add(ns)
        self._inst.queue_duration.observe(self._queue_row, ns / 1e9)

    def executed(
        self, requests: int, rows: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One model execution that answered `requests` requests with `rows` batch rows."""
        self.execution_count += 1
        self.inference_count += rows
        # As in Triton, every request in a batch is charged the whole execution:
        # it waited for all of it (perf_analyzer's breakdown relies on this).
        self.compute_input.add(input_ns * requests, requests)
        self.compute_infer.add(infer_ns * requests, requests)
        self.compute_output.add(output_ns * requests, requests)
        batch = self.batches[rows]
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)
        inst = self._inst
        inst.compute_duration.observe(self._compute_row, (input_ns + infer_ns + output_ns) / 1e9)
        inst.batch_size.observe(self._batch_row, rows)
