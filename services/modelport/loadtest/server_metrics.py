"""Where the time went on the server side, from its `/metrics` before and after a run.

The load generator sees end-to-end latency; the services' histograms split it:
router time, queue wait, model compute, and the batch sizes dynamic batching
reached. Means over the run come from the `_sum`/`_count` deltas.
"""

from __future__ import annotations

from typing import Any

from modelport.common.scrape import Scrape

# (report key, histogram base name) in seconds; names as the services export them.
DURATIONS = (
    ("router_ms", "modelport_router_request_duration_seconds"),
    ("request_ms", "modelport_inference_request_duration_seconds"),
    ("queue_ms", "modelport_inference_queue_duration_seconds"),
    ("compute_ms", "modelport_inference_compute_duration_seconds"),
)
BATCH_SIZE = "modelport_inference_batch_size"
REQUESTS = "modelport_inference_requests_total"


def _delta(before: Scrape, after: Scrape, name: str, labels: dict[str, str]) -> float:
    return after.total(name, **labels) - before.total(name, **labels)


def _mean(before: Scrape, after: Scrape, base: str, model: str) -> float | None:
    """Mean of a histogram over the run, for `model` when the histogram has that label."""
    labels = {"model": model} if model and "model" in _label_names(after, base + "_count") else {}
    count = _delta(before, after, base + "_count", labels)
    if count <= 0:
        return None
    return _delta(before, after, base + "_sum", labels) / count


def _label_names(scrape: Scrape, name: str) -> set[str]:
    return {key for s in scrape.samples if s.name == name for key in s.labels}


def server_breakdown(before: Scrape, after: Scrape, model: str) -> dict[str, Any]:
    """Mean router/request/queue/compute times (ms), mean batch size, requests by code."""
    out: dict[str, Any] = {}
    for key, base in DURATIONS:
        mean = _mean(before, after, base, model)
        if mean is not None:
            out[key] = mean * 1000
    batch = _mean(before, after, BATCH_SIZE, model)
    if batch is not None:
        out["batch_size_mean"] = batch
    codes = after.label_values(REQUESTS, "code")
    labels = {"model": model} if model else {}
    by_code = {code: _delta(before, after, REQUESTS, {**labels, "code": code}) for code in codes}
    out["requests_by_code"] = {code: int(n) for code, n in sorted(by_code.items()) if n > 0}
    return out
