"""The `modelport-fastpath` binary (services/fastpath, Go): finding it, starting it.

Two services put it in front of their Python gRPC server, which then listens on
a private loopback port behind it: the router (router/fastpath.py: it forwards
plain ModelInfer calls to replicas itself) and the inference service
(inference/front_end.py: it hands ModelInfer calls to the Python process over a
Unix socket). Either way the process writes `{"port": N}` on stdout once
listening, exits when its stdin closes (the parent is gone) or on SIGTERM, and
says what went wrong on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from modelport.errors import FailedPrecondition

log = logging.getLogger(__name__)

BINARY = "modelport-fastpath"
BUILD_HINT = "`make fastpath` builds it, with Debian's golang-go and golang-google-grpc-dev"


def find_binary(given: Path | None = None) -> Path | None:
    """`given` if it is an executable, else `modelport-fastpath` on PATH, else this
    checkout's build/fastpath/ (None: not found)."""
    if given is not None:
        return given if given.is_file() and os.access(given, os.X_OK) else None
    on_path = shutil.which(BINARY)
    if on_path:
        return Path(on_path)
    built = Path(__file__).resolve().parents[3] / "build" / "fastpath" / BINARY
    return built if built.is_file() and os.access(built, os.X_OK) else None


@dataclass(frozen=True)
class Choice:
    binary: Path | None
    reason: str  # why it is used or not, for the one log line


def choose(mode: str, given: Path | None, why_not: str) -> Choice:
    """The binary when `--fast-path MODE` is to run it, else None; `why_not` says what
    configured needs Python ("" if nothing). `on` that cannot be honoured fails here,
    before anything starts."""
    if mode == "off":
        return Choice(None, "--fast-path off")
    binary = find_binary(given)
    if mode == "on":
        if why_not:
            raise FailedPrecondition(f"--fast-path on cannot be used: {why_not}")
        if binary is None:
            where = given or "on PATH or in build/fastpath/"
            raise FailedPrecondition(
                f"--fast-path on needs the {BINARY} binary ({BUILD_HINT}); none at {where}"
            )
        return Choice(binary, f"--fast-path on ({binary})")
    if why_not:
        return Choice(None, f"--fast-path auto: {why_not}")
    if binary is None:
        return Choice(None, f"--fast-path auto: no {BINARY} binary ({BUILD_HINT})")
    return Choice(binary, f"--fast-path auto ({binary})")


def host_port(host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{host}:{port}"


async def spawn(
    command: Sequence[str], where: str, on_line: Callable[[bytes], None] | None = None
) -> tuple[subprocess.Popen[bytes], asyncio.Future[int], int]:
    """Start it and wait until it listens: the process, a future of its exit status
    and the port it bound. `on_line` gets each later line it writes on stdout (on
    the event loop); stderr goes to the log.

    Started with CPython's subprocess (vfork, then exec), never the event loop's:
    under uvloop that is a real fork() of this many-threaded process, whose gRPC
    fork handlers can crash the child before its exec (see
    registry/derive_executor.py). Its output is read on threads of its own."""
    process = subprocess.Popen(
        list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    first = await asyncio.to_thread(process.stdout.readline)
    if not first:
        said = (await asyncio.to_thread(process.stderr.read)).decode(errors="replace")
        await asyncio.to_thread(process.wait)
        raise OSError(f"{BINARY} could not listen on {where}: {said.strip() or 'no reason given'}")
    port = int(json.loads(first)["port"])
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[int] = loop.create_future()
    threading.Thread(target=_hear, args=(process, exited, loop, on_line), daemon=True).start()
    threading.Thread(target=_log_lines, args=(process.stderr,), daemon=True).start()
    return process, exited, port


async def terminate(
    process: subprocess.Popen[bytes], exited: asyncio.Future[int], grace: float
) -> None:
    """SIGTERM: it stops accepting and lets calls in flight finish within its -grace;
    killed when it takes longer than that."""
    if process.poll() is None:
        process.terminate()
    try:
        await asyncio.wait_for(asyncio.shield(exited), grace + 1)
    except TimeoutError:
        process.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), 5)


def _hear(
    process: subprocess.Popen[bytes],
    exited: asyncio.Future[int],
    loop: Any,
    on_line: Callable[[bytes], None] | None,
) -> None:
    """(Its own thread.) Each line to the event loop, then the exit status."""
    assert process.stdout is not None
    try:
        while line := process.stdout.readline():
            if on_line is not None:
                loop.call_soon_threadsafe(on_line, line)
        code = process.wait()
        loop.call_soon_threadsafe(_settle, exited, code)
    except RuntimeError:  # the event loop is closed: nobody is listening any more
        pass


def _settle(exited: asyncio.Future[int], code: int) -> None:
    if not exited.done():
        exited.set_result(code)


def _log_lines(stream: IO[bytes]) -> None:
    """(Its own thread.) What the process says on stderr, into the service's log."""
    for line in iter(stream.readline, b""):
        log.warning("%s: %s", BINARY, line.decode(errors="replace").rstrip())
