"""Access control around every RPC handler: identity, policy, quota, audit.

`AccessControl.wrap(method, handler)` returns the handler with its behaviour
inside the checks that `auth.rpc_access` prescribes for that RPC, for all four
streaming kinds, without the servicer knowing:

- the caller is authenticated from the call's metadata and client certificate
  (UNAUTHENTICATED otherwise, with no detail);
- the action on the model the request names is authorized before the servicer
  runs, so a refusal is the same whether the model exists or not
  (PERMISSION_DENIED naming action and model); streamed requests are checked
  message by message;
- answers that list models keep only those the caller may use;
- a request naming something a tenant owns (a training job) is authorized on
  the model it is about, for its owner or the model's admins; to anyone else
  it is NOT_FOUND, as one that does not exist;
- counted actions (inference) take the tenant's quota (RESOURCE_EXHAUSTED with
  `retry-after` seconds and gRPC's `grpc-retry-pushback-ms` in the trailers);
  uploads count their bytes against the daily allowance;
- writes and model-control calls become one audit event each, whatever the
  outcome; requests and refusals are counted per tenant.

The principal is in `current_principal` while the servicer runs.
"""

from __future__ import annotations

import contextvars
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
from opentelemetry.metrics import Observation

from modelport.auth import audit
from modelport.auth.gate import Gate
from modelport.auth.identity import Credentials, Principal
from modelport.auth.peers import sans_from_auth_context
from modelport.auth.quotas import Admission, UploadLedger, UploadMeter
from modelport.auth.rpc_access import RpcAccess, access_of
from modelport.client.credentials import ON_BEHALF_OF
from modelport.common.grpc_errors import retry_trailers
from modelport.common.metrics import meter
from modelport.errors import InvalidInput, ModelportError, NotFound, QuotaExceeded

current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "modelport_principal", default=None
)

# Counted in plain dicts on the hot path (a synchronous OpenTelemetry add costs tens
# of µs per call) and read by the exporter when /metrics is scraped. Labels are
# bounded: tenants the policy does not name are "other".
_request_counts: Counter[tuple[str, str, str]] = Counter()
_rejection_counts: Counter[tuple[str, str]] = Counter()


def _observe_requests(options: Any) -> list[Observation]:
    return [
        Observation(n, {"service": s, "tenant": t, "outcome": o})
        for (s, t, o), n in list(_request_counts.items())
    ]


def _observe_rejections(options: Any) -> list[Observation]:
    return [
        Observation(n, {"service": s, "tenant": t}) for (s, t), n in list(_rejection_counts.items())
    ]


_meter = meter("modelport.auth")
_meter.create_observable_counter(
    "modelport_auth_requests",
    callbacks=[_observe_requests],
    description="Calls by tenant and outcome (ok, denied, failed)",
)
_meter.create_observable_counter(
    "modelport_quota_rejections",
    callbacks=[_observe_rejections],
    description="Calls refused by a quota, by tenant",
)


def count_call(service: str, tenant: str, error: BaseException | None) -> None:
    """One call's outcome in the per-tenant counters (`tenant`: the bounded label);
    HTTP front ends (the router's OpenAI API) count theirs here as gRPC calls do."""
    outcome, _, _ = audit.outcome_of(error)
    _request_counts[(service, tenant, outcome)] += 1
    if isinstance(error, QuotaExceeded):
        _rejection_counts[(service, tenant)] += 1


INFERENCE_COUNTED = frozenset({"infer", "stream"})
LOCAL = Principal("local", "sibling", "local")


# Set by modelport-fastpath on the calls it relays: the caller's own address (this
# server's peer is then the Go process on loopback). Believed only from loopback.
FORWARDED_PEER = "x-modelport-forwarded-peer"
_LOOPBACK = ("ipv4:127.", "ipv6:[::1]")


def credentials_of(context: grpc.aio.ServicerContext) -> Credentials:
    metadata = context.invocation_metadata() or ()
    peer = context.peer() or ""
    if peer.startswith(_LOOPBACK):
        for key, value in metadata:
            if key == FORWARDED_PEER:
                peer = value if isinstance(value, str) else value.decode("latin-1")
    return Credentials.from_headers(
        metadata, sans_from_auth_context(context.auth_context() or {}), peer
    )


async def _refuse(context: grpc.aio.ServicerContext, error: ModelportError) -> None:
    await context.abort(grpc.StatusCode[error.code], str(error))


class _Ended(ModelportError):
    """How an already aborted call ended, for the audit event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Call:
    """One call's checks and bookkeeping."""

    def __init__(
        self,
        control: AccessControl,
        method: str,
        rule: RpcAccess,
        context: grpc.aio.ServicerContext,
    ) -> None:
        self.control = control
        self.method = method
        self.rule = rule
        self.context = context
        self.creds = credentials_of(context)
        self.principal: Principal | None = None
        self.model = ""
        self.admissions: list[Admission] = []
        self.error: BaseException | None = None
        self.meter: UploadMeter | None = None

    async def enter(self, request: Any = None) -> None:
        """Authenticate (and authorize a unary request); a refusal ends the call here."""
        try:
            if self.control.trust_local_plaintext and self._local_plaintext():
                self.principal = LOCAL  # a sibling process of this server, inside the pod
            elif self.control.gate is not None:
                self.principal = await self.control.gate.identify(self.creds)
            if request is not None:
                self.authorize(request)
        except ModelportError as exc:
            self.error = exc
            self.finish()
            await _refuse(self.context, exc)

    def authorize(self, request: Any) -> None:
        """Check the request's model (each streamed message comes through here)."""
        rule, principal, gate = self.rule, self.principal, self.control.gate
        if rule.action is None:
            return
        if rule.owned is not None:
            self.authorize_owned(rule.owned(request))
            return
        if isinstance(request, bytes):  # a handler on raw bytes (the router's hot path)
            model = self.control.raw_model(request) if rule.model is not None else ""
        else:
            model = rule.model(request) if rule.model is not None else ""
        # A stream's later messages may name no model (an upload's chunks): the
        # first message's authorization covers them.
        follows = rule.per_message and not model and bool(self.model)
        if model and not self.model:
            self.model = model
        if gate is None or principal is None or principal is LOCAL:  # audit only
            return
        if not follows and (model or rule.keep is None):
            gate.authorize(principal, rule.action, model)
        try:
            if rule.action in self.control.counted and gate.quotas is not None:
                if self.admissions and rule.per_message:
                    self.admissions[0].take_request()  # a stream's next request: a rate token
                else:
                    self.admissions.append(gate.quotas.admit(principal.tenant, model))
            if rule.bytes_of is not None:
                self.count_bytes(gate, principal, rule.bytes_of(request))
        except QuotaExceeded as exc:
            # Set now: whichever layer ends the call, the hint goes with its status.
            self.context.set_trailing_metadata(retry_trailers(exc))
            raise

    def authorize_owned(self, key: str) -> None:
        """`key` names something a tenant owns: its owner (or an admin of its model)
        may act on it; to others, "not found" as if it did not exist, so no one
        learns which ids are other tenants'."""
        gate, principal, action = self.control.gate, self.principal, self.rule.action
        owner_of = self.control.owner_of
        found = owner_of(key) if owner_of is not None else None
        if found is not None:
            self.model = found[0]  # the audit event names the model
        if gate is None or principal is None or principal is LOCAL:
            return  # audit only: the servicer answers for an unknown id
        assert action is not None
        policy = gate.policy()
        if found is not None:
            model, owner = found
            if policy.allows_owned(principal, action, model, owner):
                return
            if owner == principal.tenant:  # theirs, but the action is not granted
                policy.check(principal, action, model)
        raise NotFound(f"job '{key}' not found")

    def count_bytes(self, gate: Gate, principal: Principal, count: int) -> None:
        if self.meter is None:
            spec = gate.policy().quota_of(principal.tenant)
            limit = spec.upload_bytes_per_day if spec is not None else None
            if limit is None or self.control.upload_ledger is None:
                return
            self.meter = UploadMeter(principal.tenant, limit, self.control.upload_ledger)
        self.meter.add(count)

    def allowed(self) -> Callable[[str], bool] | None:
        """Which models the caller may see in a listing; None: all of them."""
        gate, principal, action = self.control.gate, self.principal, self.rule.action
        if self.rule.keep is None or self.model or gate is None or principal is None:
            return None
        policy = gate.policy()
        assert action is not None

        def allowed(model: str, owner: str | None = None) -> bool:
            if owner is None:
                return policy.allows(principal, action, model)
            return policy.allows_owned(principal, action, model, owner)

        return allowed

    def filter(self, response: Any) -> Any:
        allowed = self.allowed()
        if allowed is None or self.rule.keep is None:
            return response
        return self.rule.keep(response, allowed)

    def _local_plaintext(self) -> bool:
        security = (self.context.auth_context() or {}).get("transport_security_type", [b""])
        loopback = self.creds.peer.startswith(_LOOPBACK)
        return next(iter(security), b"") != b"ssl" and loopback

    def _ended_as(self, error: BaseException | None) -> BaseException | None:
        """A call a layer inside already aborted ends as its status says."""
        if not isinstance(error, grpc.aio.AbortError):
            return error
        code = self.context.code()
        name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
        return _Ended(name, self.context.details() or "")

    def finish(self) -> None:
        for admission in self.admissions:
            admission.release()
        self.error = self._ended_as(self.error)
        count_call(self.control.service, self.control.label(self.principal), self.error)
        if self.rule.audited and self.control.audit is not None:
            self.control.audit.record(
                audit.event(
                    self.control.service,
                    self.rule.action or "",
                    self.method.rsplit("/", 1)[-1],
                    self.principal,
                    self.creds,
                    self.error,
                    model=self.model,
                    details=self._on_behalf_of(),
                )
            )

    def _on_behalf_of(self) -> dict[str, str]:
        """Whom a service says it acts for (recorded as said; the service's own
        identity is the one authorized). Read only for audited writes."""
        for key, value in self.context.invocation_metadata() or ():
            if key == ON_BEHALF_OF and isinstance(value, str):
                return {"on_behalf_of": value[:256]}
        return {}


class AccessControl:
    """The checks one server applies (router, registry, or an inference service)."""

    def __init__(
        self,
        service: str,
        gate: Gate | None,
        audit_sink: audit.AuditSink | None = None,
        upload_ledger: UploadLedger | None = None,
        counted: Iterable[str] = INFERENCE_COUNTED,
        raw_model: Callable[[bytes], str] | None = None,
        trust_local_plaintext: bool = False,
        owner_of: Callable[[str], tuple[str, str] | None] | None = None,
    ) -> None:
        """`raw_model` reads the model name from a serialized request, for handlers
        that take raw bytes (the router forwards ModelInfer without decoding);
        `owner_of(id)` says what an owned thing (a training job) is about: (model,
        tenant that created it), None when there is no such thing."""
        self.service = service
        self._raw_model = raw_model
        # Calls over plaintext from loopback are a sibling worker's (on the private
        # port, when the public one is TLS): trusted, audited.
        self.trust_local_plaintext = trust_local_plaintext
        self.gate = gate
        self.audit = audit_sink
        self.upload_ledger = upload_ledger
        self.counted = frozenset(counted)
        self.owner_of = owner_of

    def raw_model(self, request: bytes) -> str:
        if self._raw_model is None:
            raise TypeError("a raw-bytes handler needs AccessControl(raw_model=…)")
        try:
            return self._raw_model(request)
        except ValueError as exc:
            raise InvalidInput(f"malformed request: {exc}") from None

    def label(self, principal: Principal | None) -> str:
        if principal is LOCAL:
            return "local"
        if self.gate is None or principal is None:
            return "anonymous"
        return self.gate.metric_label(principal)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        try:
            rule = access_of(method)
        except KeyError:
            return _handler(handler, _refusal(method))
        if rule is None:  # health, reflection: open
            return handler
        if self.gate is None and not rule.audited and not self.trust_local_plaintext:
            return handler  # audit only, and this RPC is not audited: untouched
        if handler.request_streaming and handler.response_streaming:
            return _handler(handler, self._stream_stream(method, rule, handler.stream_stream))
        if handler.request_streaming:
            return _handler(handler, self._stream_unary(method, rule, handler.stream_unary))
        if handler.response_streaming:
            return _handler(handler, self._unary_stream(method, rule, handler.unary_stream))
        return _handler(handler, self._unary_unary(method, rule, handler.unary_unary))

    def _unary_unary(self, method: str, rule: RpcAccess, inner: Any) -> Any:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _Call(self, method, rule, context)
            await call.enter(request)
            token = current_principal.set(call.principal)
            try:
                return call.filter(await inner(request, context))
            except BaseException as exc:
                call.error = exc
                raise
            finally:
                current_principal.reset(token)
                call.finish()

        return behaviour

    def _unary_stream(self, method: str, rule: RpcAccess, inner: Any) -> Any:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = _Call(self, method, rule, context)
            await call.enter(request)
            current_principal.set(call.principal)
            allowed = call.allowed()
            try:
                async for item in inner(request, context):
                    kept = item if allowed is None else rule.keep(item, allowed)  # type: ignore[misc]
                    if kept is not None:
                        yield kept
            except BaseException as exc:
                call.error = exc
                raise
            finally:
                call.finish()

        return behaviour

    def _stream_unary(self, method: str, rule: RpcAccess, inner: Any) -> Any:
        async def behaviour(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            call = _Call(self, method, rule, context)
            await call.enter()
            token = current_principal.set(call.principal)

            async def checked() -> AsyncIterator[Any]:
                # A refusal is raised into the servicer's read, which then drops
                # what it received (an upload's bytes) and ends the call with it.
                async for message in requests:
                    call.authorize(message)
                    yield message

            try:
                return await inner(checked(), context)
            except BaseException as exc:
                call.error = exc
                raise
            finally:
                current_principal.reset(token)
                call.finish()

        return behaviour

    def _stream_stream(self, method: str, rule: RpcAccess, inner: Any) -> Any:
        async def behaviour(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            call = _Call(self, method, rule, context)
            await call.enter()
            current_principal.set(call.principal)
            refused: list[ModelportError] = []

            async def checked() -> AsyncIterator[Any]:
                # A refused message ends the requests: the servicer answers those
                # before it, then the call ends with the refusal's status.
                async for message in requests:
                    try:
                        call.authorize(message)
                    except ModelportError as exc:
                        refused.append(exc)
                        return
                    yield message

            try:
                async for item in inner(checked(), context):
                    yield item
            except BaseException as exc:
                call.error = exc
                raise
            finally:
                if refused and call.error is None:
                    call.error = refused[0]
                call.finish()
            if refused:
                await _refuse(context, refused[0])

        return behaviour


def _handler(like: grpc.RpcMethodHandler, behaviour: Any) -> grpc.RpcMethodHandler:
    """A handler of `like`'s streaming kind and (de)serializers running `behaviour`."""
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(like.request_streaming, like.response_streaming)]
    return make(
        behaviour,
        request_deserializer=like.request_deserializer,
        response_serializer=like.response_serializer,
    )


def _refusal(method: str) -> Any:
    """An RPC with no access rule is refused, never served unchecked."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} has no access rule")

    return refuse
