"""Process-wide metrics: OpenTelemetry instruments exported as Prometheus text.

One MeterProvider per process, read by the Prometheus exporter, served on the
metrics port at `/metrics`. Services take a `Meter` from `meter(name)`.
"""

from __future__ import annotations

import logging
import ssl
import threading

from opentelemetry import metrics as otel_metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from modelport.common.https import CertificateFiles, keep_context_fresh

log = logging.getLogger(__name__)

# Seconds, from 100 µs (a trivial model) to 30 s (a large batch on CPU).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_lock = threading.Lock()
_provider: MeterProvider | None = None
_servers: dict[tuple[str, int], int] = {}


def provider(service_name: str = "modelport") -> MeterProvider:
    """The process's MeterProvider, created on first use."""
    global _provider
    with _lock:
        if _provider is None:
            views = [
                View(
                    instrument_type=Histogram,
                    instrument_name="*_duration",
                    aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS),
                ),
                View(
                    instrument_type=Histogram,
                    instrument_name="*_batch_size",
                    aggregation=ExplicitBucketHistogramAggregation(BATCH_BUCKETS),
                ),
            ]
            _provider = MeterProvider(
                # Scope labels on every series are noise for Prometheus users.
                metric_readers=[PrometheusMetricReader(scope_info_enabled=False)],
                views=views,
                resource=Resource.create({"service.name": service_name}),
            )
            otel_metrics.set_meter_provider(_provider)
        return _provider


def meter(name: str) -> otel_metrics.Meter:
    return provider().get_meter(name)


def serve_metrics(host: str, port: int, tls: CertificateFiles | None = None) -> int:
    """Serve `/metrics` on host:port (once per address); returns the bound port.

    With `tls`, over HTTPS with the service's own certificate, client certificates
    required when it has a CA (the same trust as its gRPC port); rotated files are
    picked up without a restart.
    """
    from prometheus_client import start_http_server

    provider()
    with _lock:
        if (host, port) in _servers and port != 0:
            return _servers[(host, port)]
        if tls is None:
            server, _thread = start_http_server(port, addr=host)
        else:
            tls.read()  # a broken pair fails here, with the flag's name
            ca = str(tls.ca_file) if tls.ca_file is not None else None
            server, _thread = start_http_server(
                port,
                addr=host,
                certfile=str(tls.cert_file),
                keyfile=str(tls.key_file),
                client_cafile=ca,
                client_auth_required=ca is not None,
            )
            socket = server.socket
            assert isinstance(socket, ssl.SSLSocket)
            keep_context_fresh(socket.context, tls)
        bound = int(server.server_port)
        _servers[(host, port)] = bound
    scheme = "https" if tls is not None else "http"
    log.info("metrics on %s://%s:%d/metrics", scheme, host, bound)
    return bound
