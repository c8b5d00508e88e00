"""/metrics of several processes as one page: samples with the same name and labels add up.

Counters, histogram buckets and sums, and the gauges modelport exports (in
flight, queue depth) are all sums across the processes of one server.
"""

from __future__ import annotations

import logging
import ssl
import threading
import urllib.request
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.parser import text_string_to_metric_families

from modelport.common.https import CertificateFiles, keep_context_fresh

log = logging.getLogger(__name__)


def merge_metrics(texts: list[str]) -> str:
    """Sum samples with the same name and labels across processes; re-render as text."""
    kinds: dict[str, tuple[str, str]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = defaultdict(dict)
    for text in texts:
        for family in text_string_to_metric_families(text):
            kinds.setdefault(family.name, (family.type, family.documentation))
            bucket = values[family.name]
            for sample in family.samples:
                if family.name == "target_info":
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                bucket[key] = bucket.get(key, 0.0) + sample.value
    lines: list[str] = []
    for name, (kind, doc) in kinds.items():
        if not values[name]:
            continue
        exposed = f"{name}_total" if kind == "counter" and not name.endswith("_total") else name
        lines.append(f"# HELP {exposed} {doc}")
        lines.append(f"# TYPE {exposed} {kind}")
        for (sample_name, labels), value in values[name].items():
            rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(
                f"{sample_name}{{{rendered}}} {value!r}" if rendered else f"{sample_name} {value!r}"
            )
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def serve_merged_metrics(
    host: str, port: int, worker_ports: list[int], tls: CertificateFiles | None = None
) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            texts = []
            for worker_port in worker_ports:
                url = f"http://127.0.0.1:{worker_port}/metrics"
                try:
                    texts.append(urllib.request.urlopen(url, timeout=5).read().decode())
                except OSError as exc:
                    log.warning("metrics of a worker unavailable: %s", exc)
            body = merge_metrics(texts).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    if tls is not None:  # --metrics-tls: the same trust as the gRPC port
        tls.read()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.ca_file is not None:
            context.load_verify_locations(tls.ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        server.socket = context.wrap_socket(server.socket, server_side=True)
        keep_context_fresh(context, tls)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    log.info("merged metrics on http://%s:%d/metrics", host, server.server_port)
    return server
