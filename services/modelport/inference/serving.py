"""Answering inference requests: decode, queue on the version's batcher, encode.

Transport-free: requests and answers are OIP messages, the deadline is seconds
left (None: no deadline). Failures are domain errors; on a stream they travel
in-band, each answer carrying its request's id, as Triton does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from modelport.errors import InvalidInput, ModelportError, public_message
from modelport.inference import codec
from modelport.inference.model_manager import ModelManager
from modelport.proto.inference import grpc_service_pb2 as pb

log = logging.getLogger(__name__)


class OnDemand(Protocol):
    """Models loaded when asked for (`pool.ModelPool`): `use` loads and pins one."""

    def use(
        self, name: str, version: str, deadline: float | None
    ) -> AbstractAsyncContextManager[None]: ...


async def infer(
    manager: ModelManager,
    request: pb.ModelInferRequest,
    remaining: float | None,
    pool: OnDemand | None = None,
) -> pb.ModelInferResponse:
    if pool is None:
        return await _infer_loaded(manager, request, remaining)
    # A pool replica loads the model on demand and pins it for this request.
    deadline = None if remaining is None else time.monotonic() + remaining
    async with pool.use(request.model_name, request.model_version, deadline):
        left = None if deadline is None else deadline - time.monotonic()
        return await _infer_loaded(manager, request, left)


async def _infer_loaded(
    manager: ModelManager, request: pb.ModelInferRequest, remaining: float | None
) -> pb.ModelInferResponse:
    served = manager.get(request.model_name, request.model_version)
    spec = served.spec
    try:
        arrays, rows, signature = codec.decode_inputs(request, spec)
        selected = codec.requested_outputs(request, spec)
    except InvalidInput as exc:
        served.stats.request_failed(0, exc.code)
        raise
    deadline = None if remaining is None else time.monotonic() + remaining
    outputs = await served.infer(arrays, rows, signature, deadline)
    return codec.build_response(request, spec, served.version, outputs, selected)


async def stream(
    manager: ModelManager,
    requests: AsyncIterator[pb.ModelInferRequest],
    pool: OnDemand | None = None,
) -> AsyncIterator[pb.ModelStreamInferResponse]:
    """Requests run concurrently; each answer (or its error, in-band) is sent as soon
    as it is ready."""
    answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
    running: set[asyncio.Task[None]] = set()

    async def answer(request: pb.ModelInferRequest) -> None:
        try:
            response = await infer(manager, request, None, pool)
            await answers.put(pb.ModelStreamInferResponse(infer_response=response))
        except Exception as exc:
            if not isinstance(exc, ModelportError):
                log.exception("stream request failed")
            echo = pb.ModelInferResponse(
                model_name=request.model_name, model_version=request.model_version, id=request.id
            )
            await answers.put(
                pb.ModelStreamInferResponse(error_message=public_message(exc), infer_response=echo)
            )

    async def read() -> None:
        try:
            async for request in requests:
                task = asyncio.create_task(answer(request))
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.gather(*list(running))
        finally:
            await answers.put(None)

    reader = asyncio.create_task(read())
    try:
        while (item := await answers.get()) is not None:
            yield item
    finally:
        reader.cancel()
        for task in list(running):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
