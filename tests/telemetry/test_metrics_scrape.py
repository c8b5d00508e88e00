"""`/metrics` pages parse with Prometheus's own text parser, and load tests read them back."""

from __future__ import annotations

import pytest
from modelport.common import metrics
from modelport.common.scrape import Scrape, metrics_url, scrape
from modelport.loadtest.server_metrics import server_breakdown


def test_otel_instruments_export_with_prometheus_names_and_count() -> None:
    """The naming every service relies on: OTel name + unit → `_total`, `_seconds` suffixes."""
    port = metrics.serve_metrics("127.0.0.1", 0)
    meter = metrics.meter("test.scrape")
    calls = meter.create_counter("modelport_test_calls", description="test calls")
    duration = meter.create_histogram("modelport_test_call_duration", unit="s")
    before = scrape(f"127.0.0.1:{port}")
    calls.add(1, {"model": "simple", "code": "OK"})
    calls.add(2, {"model": "simple", "code": "NOT_FOUND"})
    duration.record(0.003, {"model": "simple"})
    after = scrape(f"127.0.0.1:{port}")
    assert after.total("modelport_test_calls_total", model="simple", code="OK") == 1
    assert after.total("modelport_test_calls_total", model="simple") == 3
    assert before.total("modelport_test_calls_total") == 0
    assert after.label_values("modelport_test_calls_total", "code") == {"OK", "NOT_FOUND"}
    assert after.total("modelport_test_call_duration_seconds_count", model="simple") == 1
    # LATENCY_BUCKETS apply to every *_duration histogram: 3 ms falls in the 5 ms bucket.
    assert after.total("modelport_test_call_duration_seconds_bucket", le="0.0025") == 0
    assert after.total("modelport_test_call_duration_seconds_bucket", le="0.005") == 1


def test_metrics_url_accepts_addresses_and_refuses_other_schemes() -> None:
    assert metrics_url("router:8002") == "http://router:8002/metrics"
    assert metrics_url("https://h:9/metrics") == "https://h:9/metrics"
    with pytest.raises(ValueError, match="http"):
        metrics_url("file:///etc/passwd")


PAGE = """\
# TYPE modelport_inference_requests_total counter
modelport_inference_requests_total{{model="simple",outcome="ok",code="OK"}} {ok}
modelport_inference_requests_total{{model="simple",outcome="error",code="NOT_FOUND"}} {bad}
modelport_inference_requests_total{{model="mlp",outcome="ok",code="OK"}} 1000
# TYPE modelport_inference_queue_duration_seconds histogram
modelport_inference_queue_duration_seconds_bucket{{model="simple",version="1",le="+Inf"}} {ok}
modelport_inference_queue_duration_seconds_sum{{model="simple",version="1"}} {queue_sum}
modelport_inference_queue_duration_seconds_count{{model="simple",version="1"}} {ok}
# TYPE modelport_inference_batch_size histogram
modelport_inference_batch_size_bucket{{le="+Inf"}} {batches}
modelport_inference_batch_size_sum {rows}
modelport_inference_batch_size_count {batches}
"""


def test_server_breakdown_uses_deltas_for_the_model() -> None:
    before = Scrape(PAGE.format(ok=10, bad=0, queue_sum=1.0, batches=5, rows=10))
    after = Scrape(PAGE.format(ok=110, bad=4, queue_sum=1.2, batches=30, rows=110))
    out = server_breakdown(before, after, "simple")
    assert out["requests_by_code"] == {"OK": 100, "NOT_FOUND": 4}  # mlp's 1000 not counted
    assert abs(out["queue_ms"] - 2.0) < 1e-9  # 0.2 s over 100 requests
    assert out["batch_size_mean"] == 4.0  # no model label on batch size: all batches
    assert "compute_ms" not in out  # not exported: left out, not zero
