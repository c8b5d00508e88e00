"""Bearer JWTs from an identity provider, verified with PyJWT against its JWKS.

The signing keys come from a JWKS file (re-read when it changes) or a URL
(PyJWKClient: cached, re-fetched for an unknown `kid`, with a cooldown so a
flood of forged kids cannot hammer the provider). A token must carry `exp`,
`iss` and `aud`, match the configured issuer and audience, be signed with an
asymmetric algorithm (never `none` or a shared secret), and be within its
validity window give or take `leeway_seconds` of clock skew. The tenant and
roles are read from configurable claims.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from modelport.auth.files import WatchedFile
from modelport.auth.identity import Principal
from modelport.errors import InvalidInput, Unauthenticated, Unavailable

log = logging.getLogger(__name__)

ASYMMETRIC = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


@dataclass(frozen=True)
class JwtSettings:
    issuer: str
    audience: str
    jwks_file: Path | None = None
    jwks_url: str | None = None
    leeway_seconds: float = 30.0
    tenant_claim: str = "tenant"
    roles_claim: str = "roles"
    algorithms: tuple[str, ...] = ASYMMETRIC
    # How long a fetched JWKS is trusted before it is fetched again.
    jwks_cache_seconds: float = 300.0
    # Least time between fetches forced by an unknown `kid` (forged kids must not
    # turn every request into a fetch from the provider).
    jwks_cooldown_seconds: float = 10.0

    def __post_init__(self) -> None:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise InvalidInput("JWT verification needs exactly one of a JWKS file or URL")
        if not self.issuer or not self.audience:
            raise InvalidInput("JWT verification needs an issuer and an audience")
        if set(self.algorithms) - set(ASYMMETRIC):
            raise InvalidInput(f"JWT algorithms must be among {', '.join(ASYMMETRIC)}")


def _parse_jwks(data: bytes) -> jwt.PyJWKSet:
    try:
        return jwt.PyJWKSet.from_json(data.decode())
    except (jwt.PyJWTError, ValueError) as exc:
        raise InvalidInput(f"not a usable JWKS: {exc}") from None


def _roles(value: Any) -> frozenset[str]:
    """A roles claim may be a list or a space-separated string (as OAuth scopes are)."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(str(v) for v in value)
    return frozenset()


class JwtVerifier:
    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        self._file: WatchedFile[jwt.PyJWKSet] | None = None
        self._client: jwt.PyJWKClient | None = None
        if settings.jwks_file is not None:
            self._file = WatchedFile(settings.jwks_file, _parse_jwks)
        else:
            assert settings.jwks_url is not None
            self._client = jwt.PyJWKClient(
                settings.jwks_url,
                cache_keys=True,
                lifespan=settings.jwks_cache_seconds,
                timeout=5,
                cooldown_duration=settings.jwks_cooldown_seconds,
            )

    @property
    def generation(self) -> int:
        return self._file.generation if self._file else 0

    def reload(self) -> bool:
        """Re-read a JWKS file now; True if it changed (a URL is re-fetched on demand)."""
        return self._file.reload() if self._file else False

    def _signing_key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        assert self._file is not None
        keys = self._file.get()
        kid = jwt.get_unverified_header(token).get("kid")
        if kid is None:
            if len(keys.keys) != 1:
                raise jwt.InvalidTokenError("a token without 'kid' needs a one-key JWKS")
            return keys.keys[0].key
        return keys[str(kid)].key

    def verify(self, token: str) -> Principal:
        """The principal a valid token names; Unauthenticated (no detail) otherwise."""
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                self._signing_key(token),
                algorithms=list(s.algorithms),
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            # The provider is down: not the caller's fault, and worth retrying.
            log.warning("cannot fetch the JWKS from %s: %s", s.jwks_url, exc)
            raise Unavailable("cannot fetch the identity provider's signing keys") from None
        except (jwt.PyJWTError, KeyError, ValueError) as exc:
            # The reason goes to the server log only: the caller learns nothing from it.
            log.info("JWT rejected: %s", exc)
            raise Unauthenticated("invalid credentials") from None
        tenant = claims.get(s.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            log.info("JWT rejected: no string claim %r names the tenant", s.tenant_claim)
            raise Unauthenticated("invalid credentials")
        subject = claims.get("sub")
        return Principal(
            tenant=tenant,
            subject=f"jwt:{subject}" if subject else "jwt",
            method="jwt",
            roles=_roles(claims.get(s.roles_claim)),
            expires_at=float(claims["exp"]),
        )
