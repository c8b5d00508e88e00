"""Several inference processes behind one port (SO_REUSEPORT), seen as one server.

Python's gRPC stack answers about 2,250 requests/s per process; on a machine
with spare cores, `--workers N` runs N identical worker processes that all bind
the public port, and the kernel spreads connections over them. To keep them one
server to callers:
- each worker also listens on a private loopback port; control RPCs (model
  load/unload, statistics) received by one worker are applied to or gathered
  from its siblings over those ports (see `PeerGroup`);
- the supervisor serves the public /metrics, merging every worker's samples
  (counters, histograms and gauges add up across processes);
- SIGTERM to the supervisor drains every worker; a worker that dies takes the
  supervisor down with it so Kubernetes restarts the pod whole.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import urllib.request
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from modelport.common import logs
from modelport.common.server import install_stop_signals, use_fast_event_loop

log = logging.getLogger(__name__)

PEER_METADATA = "x-modelport-peer"


def supervise(settings: Any) -> None:
    """Run `settings.workers` workers on the shared port; block until they exit."""
    logs.configure(settings.log_level, settings.log_format)
    ctx = mp.get_context("spawn")
    pipes: list[Connection] = []
    processes: list[Any] = []  # spawn-context processes
    for index in range(settings.workers):
        parent, child = ctx.Pipe()
        threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // settings.workers)
        worker_settings = dataclasses.replace(
            settings, workers=1, reuse_port=True, metrics_port=0, torch_threads=threads
        )
        process = ctx.Process(
            target=_worker_main, args=(worker_settings, index, child), name=f"worker-{index}"
        )
        process.start()
        pipes.append(parent)
        processes.append(process)
    ports = []
    for pipe, process in zip(pipes, processes, strict=True):
        if not pipe.poll(600):
            _stop_all(processes)
            sys.exit(f"worker {process.name} did not start")
        ports.append(pipe.recv())  # (private gRPC port, metrics port)
    for index, pipe in enumerate(pipes):
        pipe.send([f"127.0.0.1:{p}" for i, (p, _) in enumerate(ports) if i != index])
    metrics_server = None
    if settings.metrics_port >= 0:
        metrics_server = _serve_merged_metrics(settings.host, settings.metrics_port,
                                               [m for _, m in ports])  # fmt: skip
    log.info("supervising %d workers on port %d", len(processes), settings.grpc_port)

    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()
        for process in processes:
            if process.is_alive() and process.pid:
                process.terminate()  # SIGTERM: each worker drains

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    while any(p.is_alive() for p in processes):
        for process in processes:
            process.join(0.2)
            if not process.is_alive() and not stopping.is_set():
                log.error("%s exited (%s): stopping the others", process.name, process.exitcode)
                code = 1
                on_signal(signal.SIGTERM, None)
    if metrics_server is not None:
        metrics_server.shutdown()
    sys.exit(code)


def _stop_all(processes: list[mp.process.BaseProcess]) -> None:
    for process in processes:
        process.kill()


def _worker_main(settings: Any, index: int, pipe: Connection) -> None:
    from modelport.common import metrics, tracing
    from modelport.inference.app import InferenceApp, configure_torch

    logs.configure(settings.log_level, settings.log_format)
    use_fast_event_loop()

    async def main() -> None:
        configure_torch(settings.torch_threads)
        tracing.configure("inference", settings.otlp_endpoint)
        metrics_port = metrics.serve_metrics("127.0.0.1", 0)
        app = InferenceApp(settings, private_port=True)
        stopped = install_stop_signals(app.stop)
        await app.start()
        pipe.send((app.private_port, metrics_port))
        peers = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        app.servicer.peers.connect(peers)
        threading.Thread(target=_exit_with_supervisor, args=(pipe,), daemon=True).start()
        log.info("worker %d ready (private port %d)", index, app.private_port)
        await stopped.wait()
        await app.servicer.peers.close()
        tracing.shutdown()

    asyncio.run(main())


def _exit_with_supervisor(pipe: Connection) -> None:
    """Drain and exit when the supervisor is gone (even if it was SIGKILLed):
    its end of the pipe closes, and recv() raises EOFError."""
    try:
        while True:
            pipe.recv()
    except (EOFError, OSError):
        log.warning("supervisor went away: draining")
        os.kill(os.getpid(), signal.SIGTERM)


# -- metrics merging ------------------------------------------------------------------


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


def _serve_merged_metrics(host: str, port: int, worker_ports: list[int]) -> ThreadingHTTPServer:
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
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    log.info("merged metrics on http://%s:%d/metrics", host, server.server_port)
    return server
