"""A caller's identity, and the credentials it arrives with.

gRPC metadata and HTTP headers carry the same things: `authorization: Bearer
<token>` (a JWT or an API key, so OpenAI-style clients work unchanged) or
`x-api-key: <key>`, and the transport adds the verified client certificate's
SANs. `Credentials.from_headers` reads either kind of header list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

API_KEY_PREFIX = "mpk_"
AUTHORIZATION = "authorization"
API_KEY_HEADER = "x-api-key"
_LENGTHS = frozenset({len(AUTHORIZATION), len(API_KEY_HEADER)})


@dataclass(frozen=True)
class Principal:
    """Who is calling, once their credentials checked out.

    `tenant` is the unit of authorization, quotas and metrics; `subject` names
    the key, token subject or certificate inside it (for audit); `method` is
    how they proved it: "api-key", "jwt" or "mtls".
    """

    tenant: str
    subject: str
    method: str
    roles: frozenset[str] = frozenset()
    # Epoch seconds after which this identity must be checked again (token or key expiry).
    expires_at: float | None = None


class Credentials(NamedTuple):
    """What a request presented, before anything is verified. (A named tuple: one
    is built per request on the router, and that must cost next to nothing.)"""

    bearer: str | None = None
    api_key: str | None = None
    # SANs of the client certificate the TLS layer verified (empty without mTLS).
    peer_identities: tuple[str, ...] = ()
    # Where the request came from ("ipv4:10.0.0.7:51234"), for audit only.
    peer: str = ""
    # Several, or malformed, authorization headers: refused rather than guessed at.
    malformed: bool = False

    @property
    def token(self) -> str | None:
        """The secret presented, whichever header carried it."""
        return self.api_key or self.bearer

    @property
    def presented_secret(self) -> bool:
        return self.malformed or self.token is not None

    @classmethod
    def from_headers(
        cls,
        headers: Iterable[tuple[str, str | bytes]] | Mapping[str, str],
        peer_identities: Iterable[str] = (),
        peer: str = "",
    ) -> Credentials:
        """Read gRPC invocation metadata or HTTP headers (names are case-insensitive)."""
        pairs = headers if isinstance(headers, (tuple, list)) else _pairs(headers)
        authorization: list[str] = []
        api_keys: list[str] = []
        for name, value in pairs:
            # Per request on the router: other headers are passed over by length first.
            if len(name) not in _LENGTHS:
                continue
            key = name.lower()
            if key not in (AUTHORIZATION, API_KEY_HEADER):
                continue
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            (authorization if key == AUTHORIZATION else api_keys).append(text.strip())
        peers = tuple(peer_identities)
        if len(authorization) + len(api_keys) > 1:
            return cls(peer_identities=peers, peer=peer, malformed=True)
        if api_keys:
            return cls(
                api_key=api_keys[0] or None,
                peer_identities=peers,
                peer=peer,
                malformed=not api_keys[0],
            )
        if not authorization:
            return cls(peer_identities=peers, peer=peer)
        scheme, _, token = authorization[0].partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return cls(peer_identities=peers, peer=peer, malformed=True)
        if token.startswith(API_KEY_PREFIX):
            return cls(api_key=token, peer_identities=peers, peer=peer)
        return cls(bearer=token, peer_identities=peers, peer=peer)


def _pairs(headers: Iterable[tuple[str, str | bytes]] | Mapping[str, str]) -> Iterable[Any]:
    return headers.items() if isinstance(headers, Mapping) else headers
