"""Several processes of one service behind one port (SO_REUSEPORT), seen as one server.

Python's gRPC stack answers about 2,250 requests/s per process; with spare
cores, `--workers N` runs N identical worker processes that all bind the
public port, and the kernel spreads connections over them. To keep them one
server to callers:
- each worker tells the supervisor how its siblings reach it (a private
  loopback address) and is told theirs: control RPCs that must act on the
  whole server (the inference service's load/unload/statistics) fan out there;
- the supervisor serves the public /metrics, merging every worker's samples;
- SIGTERM to the supervisor drains every worker; a worker that dies takes the
  supervisor down with it, so Kubernetes restarts the pod whole; a worker
  whose supervisor dies (even by SIGKILL) drains and exits.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any, Protocol

from modelport.common import logs
from modelport.common.metrics_merge import serve_merged_metrics
from modelport.common.runtime import Build, S, Service, serve, use_fast_event_loop

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 600


class WorkerService(Service, Protocol):
    """A service that can run as one of several workers."""

    def sibling_address(self) -> str: ...

    async def join_siblings(self, addresses: list[str]) -> None: ...


def supervise(name: str, settings: S, build: Build[S], workers: int) -> None:
    """Run `workers` processes of the service; block until they exit (exits the process)."""
    ctx = mp.get_context("spawn")
    worker_settings = settings.for_worker(workers)
    pipes: list[Connection] = []
    processes: list[Any] = []  # spawn-context processes
    for index in range(workers):
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_worker_main,
            args=(name, worker_settings, build, index, child),
            name=f"worker-{index}",
        )
        process.start()
        pipes.append(parent)
        processes.append(process)
    contacts = []
    for pipe, process in zip(pipes, processes, strict=True):
        if not pipe.poll(START_TIMEOUT_SECONDS):
            for other in processes:
                other.kill()
            sys.exit(f"{name} {process.name} did not start")
        contacts.append(pipe.recv())  # (sibling address, metrics port)
    for index, pipe in enumerate(pipes):
        pipe.send([address for i, (address, _) in enumerate(contacts) if i != index])
    metrics_server = None
    if settings.metrics_port >= 0:
        metrics_server = serve_merged_metrics(
            settings.host,
            settings.metrics_port,
            [port for _, port in contacts],
            settings.tls if settings.metrics_tls else None,
        )
    log.info("supervising %d %s workers on port %d", workers, name, settings.grpc_port)

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


def _worker_main(name: str, settings: S, build: Build[S], index: int, pipe: Connection) -> None:
    logs.configure(settings.log_level, settings.log_format)
    use_fast_event_loop()

    async def on_started(service: Service) -> None:
        worker: WorkerService = service  # type: ignore[assignment]
        from modelport.common.metrics import serve_metrics

        pipe.send((worker.sibling_address(), serve_metrics("127.0.0.1", 0)))
        siblings = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        await worker.join_siblings(siblings)
        threading.Thread(target=_exit_with_supervisor, args=(pipe,), daemon=True).start()
        log.info("worker %d ready (siblings reach it at %s)", index, worker.sibling_address())

    # /metrics of a worker is private: the supervisor scrapes and merges it.
    asyncio.run(serve(name, settings, build, metrics_address=("127.0.0.1", -1),
                      on_started=on_started))  # fmt: skip


def _exit_with_supervisor(pipe: Connection) -> None:
    """Drain and exit when the supervisor is gone (even if it was SIGKILLed):
    its end of the pipe closes, and recv() raises EOFError."""
    try:
        while True:
            pipe.recv()
    except (EOFError, OSError):
        log.warning("supervisor went away: draining")
        os.kill(os.getpid(), signal.SIGTERM)
