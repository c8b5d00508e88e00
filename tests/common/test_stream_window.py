"""ModelStreamInfer's rule (answer as ready, bounded reads), as the core both services share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from modelport.common.stream_window import StreamWindow, answer_as_ready
from modelport.errors import MalformedRequest

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


class Messages:
    """A request stream as the error boundary hands it over: an exception item is
    raised from `__anext__`, and the stream can be read on after it."""

    def __init__(self, items: list[object], read: list[object]) -> None:
        self.items = list(items)
        self.read = read

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> str:
        if not self.items:
            raise StopAsyncIteration
        item = self.items.pop(0)
        self.read.append(item)
        if isinstance(item, BaseException):
            raise item
        return str(item)


def messages(items: list[object], read: list[object]) -> AsyncIterator[str]:
    return Messages(items, read)


async def test_answers_come_as_ready_and_a_bad_message_is_answered_in_band() -> None:
    async def respond(message: str) -> AsyncIterator[str]:
        await asyncio.sleep(0.2 if message == "slow" else 0)
        yield f"answer {message}"

    items = ["slow", "a", MalformedRequest("bad bytes"), "b"]
    stream = answer_as_ready(
        messages(items, []), respond, size=len, malformed=lambda exc: f"error {exc}"
    )
    answers = [a async for a in stream]
    assert answers[-1] == "answer slow"  # nothing waited behind it
    assert sorted(answers) == ["answer a", "answer b", "answer slow", "error bad bytes"]


async def test_reading_stops_while_the_window_is_full() -> None:
    release = asyncio.Event()

    async def respond(message: str) -> AsyncIterator[str]:
        await release.wait()
        yield message

    read: list[object] = []
    stream = answer_as_ready(
        messages([str(i) for i in range(10)], read), respond, size=len,
        window=StreamWindow(requests=3),
    )  # fmt: skip
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.1)
    assert len(read) == 3  # three in flight, the fourth not read
    release.set()
    answers = [await first] + [a async for a in stream]
    assert sorted(answers) == sorted(str(i) for i in range(10)) and len(read) == 10


async def test_a_byte_budget_admits_one_large_request_at_a_time() -> None:
    window = StreamWindow(requests=100, max_bytes=10)
    window.enter(50)  # one request always fits, whatever its size
    waiting = asyncio.ensure_future(window.wait_for_room())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    window.leave(50)
    await asyncio.wait_for(waiting, 1)


async def test_a_broken_read_sends_what_runs_then_fails_the_stream() -> None:
    async def respond(message: str) -> AsyncIterator[str]:
        await asyncio.sleep(0.05)
        yield message

    stream = answer_as_ready(messages(["a", "b", ConnectionError("gone")], []), respond, size=len)
    answers: list[str] = []
    with pytest.raises(ConnectionError):
        async for answer in stream:
            answers.append(answer)
    assert sorted(answers) == ["a", "b"]  # never an OK end with answers missing
