"""The aiohttp application: `/v1/models`, `/v1/completions`, `/v1/chat/completions`.

aiohttp because it is asyncio-native like the rest of the router (one event
loop for gRPC and HTTP), streams a response body chunk by chunk with flow
control, and is already in the environment (the kubernetes client needs it).
A caller that disconnects mid-stream makes the next write fail: the
generation stream is then closed, which cancels the sequence on the replica.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from aiohttp import web

from modelport.auth.gate import Gate
from modelport.router.openai import sse
from modelport.router.openai.errors import error_body, from_error
from modelport.router.openai.gated import GatedBackend, middleware
from modelport.router.openai.service import OpenAIService

Handler = Callable[[Any], Awaitable[Any]]


class OpenAIServer:
    """The HTTP server of the OpenAI API (aiohttp on the router's event loop)."""

    def __init__(
        self, service: OpenAIService, grace: float = 5.0, gate: Gate | None = None
    ) -> None:
        # On stop, streams in flight get `grace` seconds to finish. With a gate, every
        # request is authenticated, authorized and counted (see `gated`).
        app = build_app(service, gate)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=grace)
        self.port = 0

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, ssl_context=ssl_context)
        await site.start()
        server: Any = site._server  # aiohttp exposes the bound sockets only here
        self.port = int(server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        await self.runner.cleanup()


def build_app(service: OpenAIService, gate: Gate | None = None) -> web.Application:
    if gate is not None:
        service = OpenAIService(GatedBackend(service.backend, gate))
    app = web.Application(
        client_max_size=8 << 20, middlewares=[middleware(gate)] if gate is not None else []
    )

    async def models(_: web.Request) -> web.Response:
        return await _answer(lambda: service.list_models())

    async def completions(request: web.Request) -> web.StreamResponse:
        return await _post(request, service.completions)

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        return await _post(request, service.chat_completions)

    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    return app


async def _answer(call: Callable[[], Awaitable[dict[str, Any]]]) -> web.Response:
    try:
        return web.json_response(await call())
    except Exception as error:
        status, body = from_error(error)
        return web.json_response(body, status=status)


async def _post(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.json_response(
            error_body("the request body is not JSON", "invalid_request_error"), status=400
        )
    try:
        reply = await handler(body)
    except Exception as error:
        status, payload = from_error(error)
        return web.json_response(payload, status=status)
    if isinstance(reply, dict):
        return web.json_response(reply)
    return await _stream(request, reply)


async def _stream(request: web.Request, events: AsyncIterator[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": sse.CONTENT_TYPE, "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    async with aclosing(events):  # type: ignore[type-var]
        try:
            async for data in events:
                await response.write(data)
        except (ConnectionResetError, ConnectionError):
            return response  # the caller left; closing `events` cancels the generation
    await response.write_eof()
    return response
