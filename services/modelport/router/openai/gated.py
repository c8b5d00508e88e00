"""Identity, policy and quotas for the OpenAI HTTP API: the router's gRPC gate, per request.

With access control on (`--auth-policy-file` or `--allowed-peer`), every request
is authenticated from `Authorization: Bearer …` (an API key or a JWT, as on gRPC)
or the client certificate's SANs; a completion asks `infer` on its model (asked
before the model is looked up, so a refusal says nothing of what exists) and
takes the tenant's request quota; `/v1/models` lists only the models the caller
may see (`metadata`). Generated tokens are charged to the tenant's token bucket
as they stream, and the concurrency slot is held until the response ends.
Refusals: 401 with WWW-Authenticate, 403 naming the action and model, 429 with
Retry-After, in OpenAI's error shape.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from contextvars import ContextVar
from typing import Any

from aiohttp import web

from modelport.auth.gate import Gate, Pass, http_status
from modelport.auth.identity import Credentials
from modelport.errors import ModelportError
from modelport.router.openai.errors import from_error
from modelport.router.openai.service import Delta, GenerationBackend, ModelInfo

# The admitted request being served (aiohttp runs a handler in its middleware's task).
_admitted: ContextVar[Pass | None] = ContextVar("openai_admitted", default=None)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _peer_identities(request: web.Request) -> list[str]:
    """The SANs of the caller's client certificate (verified by the TLS handshake)."""
    transport = request.transport
    certificate = transport.get_extra_info("peercert") if transport is not None else None
    if not certificate:
        return []
    return [str(value) for _, value in certificate.get("subjectAltName", ())]


def _peer(request: web.Request) -> str:
    host, port = (request.transport.get_extra_info("peername") or ("", 0))[:2] if (
        request.transport is not None
    ) else ("", 0)  # fmt: skip
    return f"ipv6:[{host}]:{port}" if ":" in str(host) else f"ipv4:{host}:{port}"


async def _model_of(request: web.Request) -> str:
    """The body's `model` (the handler reads the body again; aiohttp keeps it)."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return ""  # the handler answers 400
    return str(body.get("model", "")) if isinstance(body, dict) else ""


def middleware(gate: Gate) -> Any:
    @web.middleware
    async def admit(request: web.Request, handler: Handler) -> web.StreamResponse:
        creds = Credentials.from_headers(
            list(request.headers.items()), _peer_identities(request), _peer(request)
        )
        try:
            principal = await gate.identify(creds)
            admission = None
            if request.method == "POST":
                model = await _model_of(request)
                gate.authorize(principal, "infer", model)
                if gate.quotas is not None:
                    admission = gate.quotas.admit(principal.tenant, model)
        except ModelportError as error:
            status, headers = http_status(error)
            body = from_error(error)[1]
            return web.json_response(body, status=status, headers=headers)
        admitted = Pass(principal, admission)
        token = _admitted.set(admitted)
        try:
            return await handler(request)
        finally:
            _admitted.reset(token)
            admitted.release()

    return admit


class GatedBackend:
    """The generation backend as the admitted caller sees it: its models only, its
    generated tokens charged to its quota."""

    def __init__(self, inner: GenerationBackend, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate

    async def models(self) -> list[ModelInfo]:
        infos = await self.inner.models()
        admitted = _admitted.get()
        if admitted is None:
            return infos
        visible = set(self.gate.visible(admitted.principal, "metadata", [i.id for i in infos]))
        return [info for info in infos if info.id in visible]

    async def model(self, name: str) -> ModelInfo:
        return await self.inner.model(name)  # authorized by the middleware

    def generate(
        self, model: str, prompt: str | list[int], sampling: dict[str, Any]
    ) -> AsyncIterator[Delta]:
        return self._charged(self.inner.generate(model, prompt, sampling), _admitted.get())

    async def _charged(
        self, stream: AsyncIterator[Delta], admitted: Pass | None
    ) -> AsyncIterator[Delta]:
        charged = 0
        async with aclosing(stream):  # type: ignore[type-var]
            async for delta in stream:
                if admitted is not None and delta.completion_tokens > charged:
                    admitted.charge_tokens(delta.completion_tokens - charged)
                    charged = delta.completion_tokens
                yield delta
