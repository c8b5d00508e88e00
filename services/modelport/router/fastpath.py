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
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from modelport.common.histograms import BucketHistogram
from modelport.errors import FailedPrecondition
from modelport.router import fastpath_routes
from modelport.router.forwarding import Router
from modelport.router.grpc_backends import FORWARDED_KEYS
from modelport.router.settings import RouterSettings

log = logging.getLogger(__name__)

BINARY = "modelport-fastpath"
CHECK_SECONDS = 0.25  # ejections end by the clock: how often the routes are compared
BUILD_HINT = "`make fastpath` builds it, with Debian's golang-go and golang-google-grpc-dev"


def find_binary(given: Path | None = None) -> Path | None:
    """--fast-path-binary if given, else `modelport-fastpath` on PATH, else this
    checkout's build/fastpath/ (None: not found)."""
    if given is not None:
        return given if given.is_file() and os.access(given, os.X_OK) else None
    on_path = shutil.which(BINARY)
    if on_path:
        return Path(on_path)
    built = Path(__file__).resolve().parents[3] / "build" / "fastpath" / BINARY
    return built if built.is_file() and os.access(built, os.X_OK) else None


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


@dataclass(frozen=True)
class Choice:
    binary: Path | None
    reason: str  # why it is used or not, for the one log line


def choose(settings: RouterSettings) -> Choice:
    """The fast path's binary when it is to run, else None; `on` that cannot be
    honoured fails here, before anything starts."""
    if settings.fast_path == "off":
        return Choice(None, "--fast-path off")
    binary = find_binary(settings.fast_path_binary)
    why_not = ineligible(settings)
    if settings.fast_path == "on":
        if why_not:
            raise FailedPrecondition(f"--fast-path on cannot be used: {why_not}")
        if binary is None:
            where = settings.fast_path_binary or "on PATH or in build/fastpath/"
            raise FailedPrecondition(
                f"--fast-path on needs the {BINARY} binary ({BUILD_HINT}); none at {where}"
            )
        return Choice(binary, f"--fast-path on ({binary})")
    if why_not:
        return Choice(None, f"--fast-path auto: {why_not}")
    if binary is None:
        return Choice(None, f"--fast-path auto: no {BINARY} binary ({BUILD_HINT})")
    return Choice(binary, f"--fast-path auto ({binary})")


class FastPath:
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
        self._process: asyncio.subprocess.Process | None = None
        self._published = b""
        self._changed = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def changed(self) -> None:
        """The table or the policies changed: publish at once."""
        self._changed.set()

    async def start(self, listen_host: str, listen_port: int, fallback: str) -> int:
        """Listen on the public address, relay to `fallback`; returns the bound port."""
        self._listen_host, self._fallback = listen_host, fallback
        await self._spawn(listen_port)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._keep_told()), loop.create_task(self._supervise())]
        return self.port

    async def _spawn(self, port: int) -> None:
        host = self._listen_host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self._process = process = await asyncio.create_subprocess_exec(
            str(self.binary), "-listen", f"{host}:{port}", "-fallback", self._fallback,
            "-max-message-bytes", str(self.max_message_bytes),
            "-grace", f"{self.grace_seconds}s",
            "-forward-keys", ",".join(sorted(FORWARDED_KEYS)),
            "-buckets", ",".join(str(b) for b in self.buckets),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        first = await process.stdout.readline()
        if not first:
            said = (await process.stderr.read()).decode(errors="replace").strip()
            await process.wait()
            raise OSError(
                f"{BINARY} could not listen on {host}:{port}: {said or 'no reason given'}"
            )
        self.port = int(json.loads(first)["port"])
        self._published = b""
        await self.publish()
        log.info("gRPC listening on %s:%d (plaintext, fast path: %s, relaying to %s)",
                 self._listen_host, self.port, BINARY, self._fallback)  # fmt: skip

    async def publish(self) -> None:
        """Send the routes if they changed since the last time."""
        process = self._process
        line = json.dumps(fastpath_routes.snapshot(self.router), sort_keys=True).encode()
        if line == self._published or process is None or process.stdin is None:
            return
        process.stdin.write(line + b"\n")
        await process.stdin.drain()
        self._published = line

    async def _keep_told(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), CHECK_SECONDS)
            self._changed.clear()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.publish()  # a process that exited is started again by _supervise

    async def _supervise(self) -> None:
        """Read its reports and its log; start it again on the same port if it dies."""
        while True:
            process = self._process
            assert process is not None and process.stdout is not None
            assert process.stderr is not None
            logger = asyncio.get_running_loop().create_task(_log_lines(process.stderr))
            while line := await process.stdout.readline():
                fastpath_routes.apply_report(self.router, json.loads(line), self.latency)
            code = await process.wait()
            await logger
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
        """Stop accepting, let calls in flight finish within `grace`, wait for its
        last report (it comes after the last call it forwarded)."""
        self._stopping = True
        process = self._process
        keep_told, supervise = self._tasks or (None, None)
        if keep_told is not None:
            keep_told.cancel()
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), grace + 1)
            except TimeoutError:
                process.kill()
                await process.wait()
        if supervise is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(supervise, 5)
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _log_lines(stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        log.warning("%s: %s", BINARY, line.decode(errors="replace").rstrip())
