"""The router's forwarding path outside Python (`--fast-path on|auto`).

Python's grpc.aio spends 1.5-1.8x a bare server's CPU on each forwarded
request however little the router does (benchmarks/README.md), so the plain
case is handed to `modelport-fastpath` (services/fastpath, Go): it listens on
the router's public address, forwards the ModelInfer calls that are a pure
pick-and-forward (`fastpath_routes`) straight to a replica, and relays
everything else (every other method, streams, policies, errors) to this
router, which then listens on a private loopback port and answers as always.

This module decides whether the path can be used (`choose`), runs the process
and keeps it told: a snapshot of the routes whenever discovery, the replicas'
versions, the policies or the ejections change it, and its reports go into the
router's own counters (`fastpath_routes.apply_report`). Should the process die,
it is started again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
from pathlib import Path
from typing import IO

from modelport.common.fastpath_process import BINARY, Choice, host_port, spawn, terminate
from modelport.common.fastpath_process import choose as choose_binary
from modelport.common.histograms import BucketHistogram
from modelport.router import fastpath_routes
from modelport.router.forwarding import Router
from modelport.router.grpc_backends import FORWARDED_KEYS
from modelport.router.settings import RouterSettings

log = logging.getLogger(__name__)

CHECK_SECONDS = 0.25  # ejections end by the clock: how often the routes are compared


def ineligible(settings: RouterSettings) -> str:
    """Why this configuration needs every call in Python ("" when it does not)."""
    if settings.tls is not None:
        return "router TLS is on (the fast path serves plaintext only)"
    if settings.upstream_tls is not None:
        return "TLS to the replicas is on (the fast path dials plaintext only)"
    if settings.auth is not None or settings.allowed_peers:
        return "access control is configured (identities, policies and quotas are Python's)"
    if settings.otlp_endpoint:
        return "tracing is on (the router's spans are recorded in Python)"
    return ""


def choose(settings: RouterSettings) -> Choice:
    """The binary when the fast path is to run, else None (common/fastpath_process.py)."""
    return choose_binary(settings.fast_path, settings.fast_path_binary, ineligible(settings))


class FastPath:
    """The `modelport-fastpath` process: started, told the routes, heard, restarted.

    Started with CPython's subprocess (vfork, then exec), never the event loop's: under
    uvloop that is a real fork() of this many-threaded process, whose gRPC fork handlers
    can crash the child before its exec (see registry/derive_executor.py). Its output
    is read on threads of its own and handed to the event loop."""

    def __init__(
        self,
        binary: Path,
        router: Router,
        *,
        max_message_bytes: int,
        grace_seconds: float,
        latency: BucketHistogram | None = None,
        buckets: tuple[float, ...] = (),
    ) -> None:
        self.binary = binary
        self.router = router
        self.latency = latency
        self.max_message_bytes = max_message_bytes
        self.grace_seconds = grace_seconds
        self.buckets = latency.bounds if latency is not None else buckets
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._exited: asyncio.Future[int] | None = None
        self._published = b""
        self._publishing = asyncio.Lock()
        self._prompt: asyncio.Task[None] | None = None  # a publish asked for by `changed`
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def changed(self) -> None:
        """The table or the policies changed: publish at once (on the event loop)."""
        if self._process is None or self._stopping:
            return
        if self._prompt is None or self._prompt.done():
            self._prompt = asyncio.get_running_loop().create_task(self._publish_quietly())

    async def start(self, listen_host: str, listen_port: int, fallback: str) -> int:
        """Listen on the public address, relay to `fallback`; returns the bound port."""
        self._listen_host, self._fallback = listen_host, fallback
        await self._spawn(listen_port)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._keep_told()), loop.create_task(self._supervise())]
        return self.port

    async def _spawn(self, port: int) -> None:
        where = host_port(self._listen_host, port)
        command = [
            str(self.binary), "-listen", where, "-fallback", self._fallback,
            "-max-message-bytes", str(self.max_message_bytes),
            "-grace", f"{self.grace_seconds}s",
            "-forward-keys", ",".join(sorted(FORWARDED_KEYS)),
            "-buckets", ",".join(str(b) for b in self.buckets),
        ]  # fmt: skip
        self._process, self._exited, self.port = await spawn(command, where, self._apply)
        self._published = b""
        await self.publish()
        log.info("gRPC listening on %s:%d (plaintext, fast path: %s, relaying to %s)",
                 self._listen_host, self.port, BINARY, self._fallback)  # fmt: skip

    def _apply(self, line: bytes) -> None:
        try:
            fastpath_routes.apply_report(self.router, json.loads(line), self.latency)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("%s: unreadable report %r: %s", BINARY, line[:200], exc)

    async def publish(self) -> None:
        """Send the routes if they changed since the last time."""
        async with self._publishing:
            process = self._process
            line = json.dumps(fastpath_routes.snapshot(self.router), sort_keys=True).encode()
            if line == self._published or process is None or process.stdin is None:
                return
            await asyncio.to_thread(_write_line, process.stdin, line)
            self._published = line

    async def _keep_told(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            await self._publish_quietly()

    async def _publish_quietly(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            await self.publish()  # a process that exited is started again by _supervise

    async def _supervise(self) -> None:
        """Start it again on the same port if it dies."""
        while True:
            assert self._exited is not None
            code = await asyncio.shield(self._exited)
            if self._stopping:
                return
            log.error("%s exited (code %s); starting it again on port %d", BINARY, code, self.port)
            await asyncio.sleep(0.2)
            try:
                await self._spawn(self.port)
            except OSError as exc:
                log.error("%s", exc)
                await asyncio.sleep(1.0)

    async def stop(self, grace: float) -> None:
        """Stop accepting, let calls in flight finish within `grace`, and take its last
        report (it comes before its exit, after the last call it forwarded)."""
        self._stopping = True
        tasks = [*self._tasks, *([self._prompt] if self._prompt is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        process, exited = self._process, self._exited
        if process is None or exited is None:
            return
        await terminate(process, exited, grace)


def _write_line(stream: IO[bytes], line: bytes) -> None:
    stream.write(line + b"\n")
    stream.flush()
