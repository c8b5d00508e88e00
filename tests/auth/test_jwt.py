"""Bearer JWTs: issuer, audience, expiry with clock skew, signing keys from a JWKS
file or a real HTTP JWKS endpoint, and the forgeries a verifier must refuse."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
from modelport.auth.jwt_tokens import JwtSettings, JwtVerifier
from modelport.errors import InvalidInput, Unauthenticated, Unavailable

from tests.support.identity_provider import AUDIENCE, ISSUER, IdentityProvider, SigningKey


@pytest.fixture
def idp() -> IdentityProvider:
    return IdentityProvider()


@pytest.fixture
def verifier(idp: IdentityProvider, tmp_path: Path) -> JwtVerifier:
    path = idp.write_jwks(tmp_path / "jwks.json")
    return JwtVerifier(JwtSettings(ISSUER, AUDIENCE, jwks_file=path, leeway_seconds=30))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_valid_token_names_tenant_subject_roles_and_expiry(
    idp: IdentityProvider, verifier: JwtVerifier
) -> None:
    principal = verifier.verify(idp.token("team-a", roles=["reader", "publisher"]))
    assert (principal.tenant, principal.subject, principal.method) == (
        "team-a",
        "jwt:user-1",
        "jwt",
    )
    assert principal.roles == {"reader", "publisher"}
    assert principal.expires_at is not None and principal.expires_at > time.time()
    assert verifier.verify(idp.token("team-b", roles="reader admin")).roles == {"reader", "admin"}


def test_expiry_and_not_before_allow_the_configured_clock_skew(
    idp: IdentityProvider, verifier: JwtVerifier
) -> None:
    assert verifier.verify(idp.token(lifetime=-10)).tenant == "team-a"  # 10 s late: within skew
    with pytest.raises(Unauthenticated):
        verifier.verify(idp.token(lifetime=-120))
    assert verifier.verify(idp.token(nbf=int(time.time()) + 10)).tenant == "team-a"
    with pytest.raises(Unauthenticated):
        verifier.verify(idp.token(nbf=int(time.time()) + 120))


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://evil.example"},
        {"aud": "someone-else"},
        {"exp": None},
        {"aud": None},
        {"tenant": None},
        {"tenant": ""},
        {"tenant": ["team-a"]},
    ],
    ids=["issuer", "audience", "no-exp", "no-aud", "no-tenant", "empty-tenant", "tenant-list"],
)
def test_wrong_or_missing_claims_are_refused(
    idp: IdentityProvider, verifier: JwtVerifier, claims: dict[str, object]
) -> None:
    tenant = claims.pop("tenant", "team-a")
    with pytest.raises(Unauthenticated, match=r"^invalid credentials$"):
        verifier.verify(idp.token(tenant, **claims))  # type: ignore[arg-type]


def test_forged_tokens_are_refused(idp: IdentityProvider, verifier: JwtVerifier) -> None:
    outsider = SigningKey()
    outsider.kid = idp.keys[0].kid  # claims to be the provider's key
    payload = {"iss": ISSUER, "aud": AUDIENCE, "tenant": "team-a", "exp": int(time.time()) + 60}
    body = _b64(json.dumps(payload).encode())
    unsigned = _b64(json.dumps({"alg": "none", "kid": idp.keys[0].kid}).encode()) + "." + body + "."
    # HS256 keyed with the public key: the classic algorithm-confusion forgery.
    head = _b64(json.dumps({"alg": "HS256", "kid": idp.keys[0].kid}).encode())
    secret = json.dumps(idp.keys[0].jwk).encode()
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    confused = f"{head}.{body}.{_b64(mac)}"
    valid = idp.token()
    tampered = valid.split(".")
    tampered[1] = _b64(json.dumps({**payload, "tenant": "team-root"}).encode())
    for token in (
        idp.token(key=outsider),
        unsigned,
        confused,
        ".".join(tampered),
        "not-a-jwt",
        "a.b.c",
        "",
    ):
        with pytest.raises(Unauthenticated, match=r"^invalid credentials$"):
            verifier.verify(token)


def test_a_rotated_jwks_file_is_picked_up(idp: IdentityProvider, tmp_path: Path) -> None:
    path = idp.write_jwks(tmp_path / "jwks.json")
    verifier = JwtVerifier(JwtSettings(ISSUER, AUDIENCE, jwks_file=path))
    new = idp.rotate()
    with pytest.raises(Unauthenticated):
        verifier.verify(idp.token(key=new))
    idp.write_jwks(path)
    assert verifier.reload()
    assert verifier.verify(idp.token(key=new)).tenant == "team-a"
    assert verifier.verify(idp.token(key=idp.keys[0])).tenant == "team-a"


def test_keys_are_fetched_from_a_jwks_url_and_refetched_for_a_new_kid(
    idp: IdentityProvider,
) -> None:
    idp.keys = [SigningKey("RS256")]
    with idp.serve() as url:
        verifier = JwtVerifier(JwtSettings(ISSUER, AUDIENCE, jwks_url=url, jwks_cooldown_seconds=0))
        assert verifier.verify(idp.token("team-a")).tenant == "team-a"
        assert verifier.verify(idp.token("team-b")).tenant == "team-b"
        assert idp.fetches == 1  # cached
        new = idp.rotate()
        assert verifier.verify(idp.token("team-c", key=new)).tenant == "team-c"
        assert idp.fetches == 2
    # The provider gone: a token signed with a key already known still verifies,
    # and a new one is UNAVAILABLE (worth retrying), not the caller's fault.
    assert verifier.verify(idp.token("team-a", key=new)).tenant == "team-a"
    with pytest.raises(Unavailable):
        verifier.verify(idp.token(key=idp.rotate()))


def test_forged_kids_do_not_turn_requests_into_fetches(idp: IdentityProvider) -> None:
    with idp.serve() as url:
        verifier = JwtVerifier(
            JwtSettings(ISSUER, AUDIENCE, jwks_url=url, jwks_cooldown_seconds=60)
        )
        assert verifier.verify(idp.token()).tenant == "team-a"
        for _ in range(5):
            with pytest.raises(Unauthenticated):
                verifier.verify(idp.token(key=SigningKey()))
        assert idp.fetches == 1


def test_settings_refuse_ambiguous_or_symmetric_configurations(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    with pytest.raises(InvalidInput, match="exactly one"):
        JwtSettings(ISSUER, AUDIENCE, jwks_file=jwks, jwks_url="http://x")
    with pytest.raises(InvalidInput, match="exactly one"):
        JwtSettings(ISSUER, AUDIENCE)
    with pytest.raises(InvalidInput, match="issuer and an audience"):
        JwtSettings("", AUDIENCE, jwks_file=jwks)
    with pytest.raises(InvalidInput, match="algorithms"):
        JwtSettings(ISSUER, AUDIENCE, jwks_file=jwks, algorithms=("HS256",))
