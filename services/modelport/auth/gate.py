"""One call per request at a front door: who is it, may they, is there room.

`Gate.admit(credentials, action, model)` authenticates, authorizes against
the policy in force, and (for counted actions) takes the tenant's quota; it
raises Unauthenticated, PermissionDenied or QuotaExceeded, or returns a
`Pass` to release when the request ends. It knows nothing of the transport:

    # gRPC servicer (or interceptor)
    creds = Credentials.from_headers(context.invocation_metadata(),
                                     sans_from_auth_context(context.auth_context()),
                                     context.peer())
    # HTTP handler (e.g. the OpenAI-compatible API)
    creds = Credentials.from_headers(request.headers, peer=f"{client_host}:{client_port}")

    with await gate.admit(creds, "infer", model) as admitted:
        ...                                   # serve
        admitted.charge_tokens(generated)     # after the fact, for token quotas

`http_status` gives the status and headers an HTTP handler answers a refusal
with (401 + WWW-Authenticate, 403, 429 + Retry-After).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from modelport.auth.api_keys import ApiKeyStore
from modelport.auth.authenticator import Authenticator
from modelport.auth.files import WatchedFile
from modelport.auth.identity import Credentials, Principal
from modelport.auth.jwt_tokens import JwtSettings, JwtVerifier
from modelport.auth.policy import Policy
from modelport.auth.quotas import Admission, Quotas
from modelport.errors import InvalidInput, ModelportError, QuotaExceeded


@dataclass(frozen=True)
class AuthSettings:
    """Where identities and the policy come from (the services' --auth-* options)."""

    policy_file: Path
    api_keys_file: Path | None = None
    jwks_file: Path | None = None
    jwks_url: str | None = None
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_leeway_seconds: float = 30.0
    jwt_tenant_claim: str = "tenant"
    jwt_roles_claim: str = "roles"

    def jwt_settings(self) -> JwtSettings | None:
        if self.jwks_file is None and self.jwks_url is None:
            if self.jwt_issuer or self.jwt_audience:
                raise InvalidInput("a JWT issuer/audience needs a JWKS file or URL")
            return None
        return JwtSettings(
            issuer=self.jwt_issuer,
            audience=self.jwt_audience,
            jwks_file=self.jwks_file,
            jwks_url=self.jwks_url,
            leeway_seconds=self.jwt_leeway_seconds,
            tenant_claim=self.jwt_tenant_claim,
            roles_claim=self.jwt_roles_claim,
        )


class Pass:
    """An admitted request: the principal, and its quota slots until released."""

    def __init__(self, principal: Principal, admission: Admission | None) -> None:
        self.principal = principal
        self._admission = admission

    def charge_tokens(self, count: float) -> None:
        if self._admission is not None:
            self._admission.charge_tokens(count)

    def release(self) -> None:
        if self._admission is not None:
            self._admission.release()

    def __enter__(self) -> Pass:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Derived:
    """`extend(base())`, computed again only when `base()` gives a new policy."""

    def __init__(self, base: Callable[[], Policy], extend: Callable[[Policy], Policy]) -> None:
        self._base = base
        self._extend = extend
        self._seen: Policy | None = None
        self._value = Policy()

    def __call__(self) -> Policy:
        base = self._base()
        if base is not self._seen:
            self._value = self._extend(base)
            self._seen = base
        return self._value


class Gate:
    def __init__(
        self,
        authenticator: Authenticator,
        policy: Callable[[], Policy],
        quotas: Quotas | None = None,
        reloaders: Iterable[Callable[[], bool]] = (),
    ) -> None:
        self.authenticator = authenticator
        self.policy = policy
        self.quotas = quotas
        self._reloaders = list(reloaders)

    @classmethod
    def from_settings(
        cls,
        settings: AuthSettings,
        on_reject: Callable[[str, str], None] | None = None,
        extend: Callable[[Policy], Policy] | None = None,
    ) -> Gate:
        """Files in force from now on, each re-read when it changes; `extend` adds to
        the policy read from the file (each time it changes)."""
        policy_file = WatchedFile(settings.policy_file, Policy.parse)
        policy: Callable[[], Policy] = policy_file.get
        if extend is not None:
            policy = _Derived(policy_file.get, extend)
        jwt_settings = settings.jwt_settings()
        authenticator = Authenticator(
            api_keys=ApiKeyStore(settings.api_keys_file) if settings.api_keys_file else None,
            jwt=JwtVerifier(jwt_settings) if jwt_settings else None,
            peers=lambda: policy().peers,
        )
        quotas = Quotas(lambda tenant: policy().quota_of(tenant), on_reject=on_reject)
        reloaders = [policy_file.reload]
        if authenticator.api_keys is not None:
            reloaders.append(authenticator.api_keys.reload)
        if authenticator.jwt is not None:
            reloaders.append(authenticator.jwt.reload)
        return cls(authenticator, policy, quotas, reloaders)

    def reload(self) -> bool:
        """Check every file now (each is also checked every second on use, and on
        SIGHUP where a service wires it); True if any changed."""
        return any([reload() for reload in self._reloaders])

    async def identify(self, creds: Credentials) -> Principal:
        return await self.authenticator.authenticate_async(creds)

    def authorize(self, principal: Principal, action: str, model: str) -> None:
        self.policy().check(principal, action, model)

    def visible(self, principal: Principal, action: str, models: Iterable[str]) -> list[str]:
        return self.policy().visible(principal, action, models)

    def metric_label(self, principal: Principal) -> str:
        return self.policy().metric_label(principal.tenant)

    async def admit(
        self, creds: Credentials, action: str, model: str, counted: bool = True
    ) -> Pass:
        """Authenticate, authorize, then take quota (when `counted`) — in that order,
        so an unauthorized caller learns nothing from quota answers."""
        principal = await self.identify(creds)
        self.authorize(principal, action, model)
        admission = None
        if counted and self.quotas is not None:
            admission = self.quotas.admit(principal.tenant, model)
        return Pass(principal, admission)


def http_status(error: ModelportError) -> tuple[int, dict[str, str]]:
    """The HTTP status and headers for a refusal (for HTTP front ends)."""
    if error.code == "UNAUTHENTICATED":
        return 401, {"WWW-Authenticate": 'Bearer realm="modelport"'}
    if error.code == "PERMISSION_DENIED":
        return 403, {}
    if isinstance(error, QuotaExceeded):
        return 429, {"Retry-After": str(max(1, math.ceil(error.retry_after_seconds)))}
    statuses = {
        "NOT_FOUND": 404,
        "INVALID_ARGUMENT": 400,
        "UNAVAILABLE": 503,
        "RESOURCE_EXHAUSTED": 429,
        "DEADLINE_EXCEEDED": 504,
    }
    return statuses.get(error.code, 500), {}
