"""ModelStreamInfer's one rule (answer as ready) and its bounded reads.

A ModelStreamInfer caller may send faster than the models answer. The service
reads the next message only while the stream has room: fewer than `requests`
requests in flight and fewer than `max_bytes` of their bytes (a single request
always fits, whatever its size). A request leaves the window once its answer
is sent. The rest waits in HTTP/2 flow control, on the caller's side, instead
of in our memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from modelport.errors import MalformedRequest

WINDOW_REQUESTS = 256
WINDOW_BYTES = 256 << 20


class StreamWindow:
    def __init__(self, requests: int = WINDOW_REQUESTS, max_bytes: int = WINDOW_BYTES) -> None:
        self.requests = requests
        self.max_bytes = max_bytes
        self.count = 0
        self.bytes = 0
        self._room = asyncio.Event()
        self._room.set()

    async def wait_for_room(self) -> None:
        """Before reading the next message (one reader per stream)."""
        await self._room.wait()

    def enter(self, size: int) -> None:
        self.count += 1
        self.bytes += size
        self._update()

    def leave(self, size: int) -> None:
        self.count -= 1
        self.bytes -= size
        self._update()

    def _update(self) -> None:
        if self.count < self.requests and self.bytes < self.max_bytes:
            self._room.set()
        else:
            self._room.clear()


M = TypeVar("M")
R = TypeVar("R")
_END = object()


async def answer_as_ready(
    messages: AsyncIterator[M],
    respond: Callable[[M], AsyncIterator[R]],
    *,
    size: Callable[[M], int],
    malformed: Callable[[MalformedRequest], R] | None = None,
    window: StreamWindow | None = None,
) -> AsyncIterator[R]:
    """The one rule for ModelStreamInfer (router and inference): every request runs
    concurrently with the others and each of its answers is sent as soon as it is
    ready; answers carry their request's id, so the caller matches by id.

    `respond` yields a request's answers and reports its errors in-band (it
    should not raise). A message that does not parse (`MalformedRequest` from
    the reader) is answered with `malformed(error)` and the stream goes on. The
    stream ends once the caller has closed its side and every request is
    answered; if reading fails otherwise, the answers still running are sent
    first and the stream then ends with that error, never OK with answers missing.
    """
    window = window or StreamWindow()
    out: asyncio.Queue[Any] = asyncio.Queue()
    running: set[asyncio.Task[None]] = set()
    failure: list[BaseException] = []

    async def run(message: M, taken: int) -> None:
        try:
            async for answer in respond(message):
                await out.put((answer, 0, False))
        finally:
            await out.put((None, taken, True))

    async def read() -> None:
        reader = aiter(messages)
        try:
            while True:
                await window.wait_for_room()
                try:
                    message = await anext(reader)
                except StopAsyncIteration:
                    break
                except MalformedRequest as exc:
                    if malformed is None:
                        raise
                    window.enter(0)
                    await out.put((malformed(exc), 0, True))
                    continue
                taken = size(message)
                window.enter(taken)
                task = asyncio.create_task(run(message, taken))
                running.add(task)
                task.add_done_callback(running.discard)
        except Exception as exc:  # the caller's side broke: answer what runs, then fail
            failure.append(exc)
        finally:
            if running:
                await asyncio.gather(*list(running), return_exceptions=True)
            await out.put(_END)

    reading = asyncio.create_task(read())
    try:
        while (item := await out.get()) is not _END:
            answer, taken, last = item
            if answer is not None:
                yield answer
            if last:
                window.leave(taken)
        if failure:
            raise failure[0]
    finally:
        reading.cancel()
        for task in list(running):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reading
