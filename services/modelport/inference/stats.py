"""Per-version statistics: Triton's ModelStatistics counters and the OTel metrics.

Updated only from the event loop thread, so plain integers suffice. Metric
attribute dicts are built once per version, not per request.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from opentelemetry.metrics import CallbackOptions, Observation

from modelport.common import metrics


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
    """Process-wide instruments, shared by every model version."""

    def __init__(self) -> None:
        meter = metrics.meter("modelport.inference")
        self.requests = meter.create_counter(
            "modelport_inference_requests", description="Inference requests answered"
        )
        self.request_duration = meter.create_histogram(
            "modelport_inference_request_duration", unit="s", description="Time in the server"
        )
        self.queue_duration = meter.create_histogram(
            "modelport_inference_queue_duration", unit="s", description="Time waiting for a batch"
        )
        self.compute_duration = meter.create_histogram(
            "modelport_inference_compute_duration", unit="s", description="Model execution time"
        )
        self.batch_size = meter.create_histogram(
            "modelport_inference_batch_size", description="Rows per model execution"
        )
        self.live: set[VersionStats] = set()
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
        self._ok_attributes = {**self.attributes, "outcome": "success", "code": "OK"}
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
        self._inst = instruments()
        self._inst.live.add(self)

    def close(self) -> None:
        self._inst.live.discard(self)

    def request_done(self, ns: int) -> None:
        self.success.add(ns)
        self.last_inference_ms = int(time.time() * 1000)
        self._inst.requests.add(1, self._ok_attributes)
        self._inst.request_duration.record(ns / 1e9, self.attributes)

    def request_failed(self, ns: int, code: str) -> None:
        self.fail.add(ns)
        attributes = {**self.attributes, "outcome": "failure", "code": code}
        self._inst.requests.add(1, attributes)
        self._inst.request_duration.record(ns / 1e9, self.attributes)

    def queued(self, ns: int) -> None:
        self.queue.add(ns)
        self._inst.queue_duration.record(ns / 1e9, self.attributes)

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
        self._inst.compute_duration.record((input_ns + infer_ns + output_ns) / 1e9, self.attributes)
        self._inst.batch_size.record(rows, self.attributes)
