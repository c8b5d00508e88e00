"""The one service runtime: logging, event loop, tracing, metrics, signals and drain.

Every `modelport serve <service>` (and `modelport up`) runs through
`run_service`, with a `build` function that turns the service's settings into
something that starts and stops:

    run_service("router", settings, build_router)

The order is the same for all: logs, event loop, tracing, /metrics, the memory
trimmer (`common/memory.py`), build,
start (bind, load, report ready), wait for SIGTERM/SIGINT, drain within
`grace_seconds`, flush traces, exit 0. A signal that arrives while the service
is still starting stops it as soon as it has started. With `workers > 1` the
same runs in that many processes under one supervisor (`common/supervisor.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from modelport.common import logs, metrics, tracing
from modelport.common.memory import MemoryTrimmer
from modelport.common.settings import ServerSettings
from modelport.errors import ModelportError

log = logging.getLogger(__name__)


class Service(Protocol):
    """What the runtime drives: start returns the bound gRPC port."""

    async def start(self) -> int: ...

    async def stop(self, grace: float) -> None: ...


S = TypeVar("S", bound=ServerSettings)
Build = Callable[[S], Service]


def run_service(
    name: str,
    settings: S,
    build: Build[S],
    *,
    workers: int = 1,
    on_started: Callable[[Service], Awaitable[None]] | None = None,
) -> None:
    """Run one service in the foreground until SIGTERM; blocks, returns after the drain.

    A service that cannot start (a port in use, unreadable certificates, a bad
    database URL) logs why and exits with status 2, without a stack trace.
    """
    logs.configure(settings.log_level, settings.log_format)
    if workers > 1:
        from modelport.common.supervisor import supervise

        supervise(name, settings, build, workers)
        return
    use_fast_event_loop()
    try:
        asyncio.run(serve(name, settings, build, on_started=on_started))
    except (ModelportError, OSError) as exc:
        log.error("%s cannot start: %s", name, exc)
        raise SystemExit(2) from None


async def serve(
    name: str,
    settings: S,
    build: Build[S],
    *,
    metrics_address: tuple[str, int] | None = None,
    on_started: Callable[[Service], Awaitable[None]] | None = None,
) -> None:
    """The service's whole life on the running loop (what `run_service` runs)."""
    tracing.configure(name, settings.otlp_endpoint)
    host, port = metrics_address or (settings.host, settings.metrics_port)
    if port >= 0:
        metrics.serve_metrics(host, port, settings.tls if settings.metrics_tls else None)
    stop_requested = stop_signals()
    # Freed memory goes back to the system within a second (see common/memory.py).
    trimmer = asyncio.get_running_loop().create_task(MemoryTrimmer().run())
    service = build(settings)
    try:
        bound = await service.start()
        log.info("%s ready on %s:%d", name, settings.host, bound)
        if on_started is not None:
            await on_started(service)
        await stop_requested.wait()
        await service.stop(settings.grace_seconds)
        log.info("%s stopped", name)
    finally:
        trimmer.cancel()
        tracing.shutdown()


def stop_signals() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT (later ones are ignored: the drain runs)."""
    loop = asyncio.get_running_loop()
    requested = asyncio.Event()

    def handler(signum: int) -> None:
        if not requested.is_set():
            log.info("received %s: draining", signal.Signals(signum).name)
            requested.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, handler, signum)
    return requested


def use_fast_event_loop() -> None:
    """uvloop where available: about 15% more requests per core for grpc.aio."""
    if os.environ.get("MODELPORT_EVENT_LOOP", "uvloop") != "uvloop":
        return
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
