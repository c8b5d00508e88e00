"""Credentials → Principal: API key, bearer JWT, or the mTLS peer, in that order.

A presented secret decides: a bad key or token is refused even when the
connection also has a client certificate (a caller meaning to be someone
else must not quietly become the peer). With no secret, the peer's SAN is
looked up; with neither, the call is unauthenticated.

Verifying costs: scrypt for a key (~50 ms), a JWKS fetch for a token signed
by a new key. Results are cached (bounded, keyed by the secret and the key
file's generation, never longer than the credential is valid), so the hot
path is a dict lookup; `authenticate_async` runs misses in a thread
so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from modelport.auth.api_keys import ApiKeyStore
from modelport.auth.identity import Credentials, Principal
from modelport.auth.jwt_tokens import JwtVerifier
from modelport.auth.peers import PeerIdentities
from modelport.errors import Unauthenticated

INVALID = "invalid credentials"
REQUIRED = "credentials required: an API key or bearer token, or a client certificate"


class Authenticator:
    def __init__(
        self,
        api_keys: ApiKeyStore | None = None,
        jwt: JwtVerifier | None = None,
        peers: Callable[[], PeerIdentities] | None = None,
        clock: Callable[[], float] = time.time,
        cache_entries: int = 10_000,
        cache_seconds: float = 60.0,
        negative_cache_seconds: float = 5.0,
    ) -> None:
        self.api_keys = api_keys
        self.jwt = jwt
        self._peers = peers
        self._clock = clock
        self._cache_entries = cache_entries
        self._cache_seconds = cache_seconds
        self._negative_seconds = negative_cache_seconds
        self._lock = threading.Lock()
        # (key file generation, JWKS generation, secret) -> (principal, or None for a
        # recent failure; valid until). In memory only, like the secrets in flight.
        self._cache: dict[tuple[int, int, str], tuple[Principal | None, float]] = {}

    def _cache_key(self, creds: Credentials) -> tuple[int, int, str] | None:
        secret = creds.token
        if secret is None:
            return None
        # A reloaded key file or JWKS starts a new generation: nothing cached before counts.
        return (
            self.api_keys.generation if self.api_keys else 0,
            self.jwt.generation if self.jwt else 0,
            secret,
        )

    def cached(self, creds: Credentials) -> Principal | None:
        """The principal if this secret was verified recently (raises if it failed
        recently); None when it must be verified. The hot path: one dict lookup."""
        key = self._cache_key(creds)
        if key is None:
            return None
        hit = self._cache.get(key)
        if hit is None:
            return None
        principal, until = hit
        if self._clock() >= until:
            with self._lock:
                self._cache.pop(key, None)
            return None
        if principal is None:
            raise Unauthenticated(INVALID)
        return principal

    def _remember(self, key: tuple[int, int, str], principal: Principal | None) -> None:
        now = self._clock()
        if principal is None:
            until = now + self._negative_seconds
        else:
            until = now + self._cache_seconds
            if principal.expires_at is not None:
                until = min(until, principal.expires_at)
        with self._lock:
            self._cache.pop(key, None)
            self._cache[key] = (principal, until)  # the oldest entries go first
            while len(self._cache) > self._cache_entries:
                del self._cache[next(iter(self._cache))]

    def _verify_secret(self, creds: Credentials) -> Principal:
        if creds.api_key is not None:
            if self.api_keys is None:
                raise Unauthenticated(INVALID)
            return self.api_keys.verify(creds.api_key, self._clock())
        assert creds.bearer is not None
        if self.jwt is None:
            raise Unauthenticated(INVALID)
        return self.jwt.verify(creds.bearer)

    def _fast(self, creds: Credentials) -> Principal | None:
        """What needs no slow work: refusals, cache hits, the peer lookup."""
        if creds.malformed:
            raise Unauthenticated(INVALID)
        if creds.token is not None:
            return self.cached(creds)
        principal = self._peers().identify(creds.peer_identities) if self._peers else None
        if principal is None:
            raise Unauthenticated(REQUIRED if not creds.peer_identities else INVALID)
        return principal

    def authenticate(self, creds: Credentials) -> Principal:
        """The caller's principal, or Unauthenticated with no detail. May block."""
        principal = self._fast(creds)
        if principal is not None:
            return principal
        key = self._cache_key(creds)
        assert key is not None
        try:
            principal = self._verify_secret(creds)
        except Unauthenticated:
            self._remember(key, None)
            raise
        self._remember(key, principal)
        return principal

    async def authenticate_async(self, creds: Credentials) -> Principal:
        principal = self._fast(creds)
        if principal is not None:
            return principal
        return await asyncio.to_thread(self.authenticate, creds)
