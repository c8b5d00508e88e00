"""The gate: credentials from headers → principal → policy → quota, as a front door
(gRPC servicer or HTTP handler) calls it, with real key, JWKS and policy files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from modelport.auth.api_keys import KeyEntry, new_key
from modelport.auth.gate import AuthSettings, Gate, http_status
from modelport.auth.identity import Credentials
from modelport.errors import (
    ModelportError,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    Unauthenticated,
)

from tests.support.identity_provider import AUDIENCE, ISSUER, IdentityProvider

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

ROUTER_ID = "spiffe://modelport.local/router"
POLICY = f"""
roles:
  reader: [{{actions: [infer, metadata, stream, statistics], models: ["*"]}}]
tenants:
  team-a:
    grants: [{{actions: [infer, metadata], models: [fraud]}}]
    quota: {{requests_per_second: 1, burst: 2, concurrency: 5}}
  team-b:
    roles: [reader]
peers:
  "{ROUTER_ID}": {{tenant: router, roles: [reader]}}
"""


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[str, KeyEntry]]:
    """Made once: each costs an scrypt hash."""
    return {"a": new_key("team-a"), "c": new_key("team-c")}  # team-c: granted nothing


class Setup:
    def __init__(self, tmp_path: Path, keys: dict[str, tuple[str, KeyEntry]]) -> None:
        self.idp = IdentityProvider()
        (self.key_a, entry_a), (self.key_c, entry_c) = keys["a"], keys["c"]
        self.keys_file = tmp_path / "keys.yaml"
        self.keys_file.write_text(
            yaml.safe_dump({"keys": [entry_a.to_yaml_item(), entry_c.to_yaml_item()]})
        )
        self.policy_file = tmp_path / "policy.yaml"
        self.policy_file.write_text(POLICY)
        self.settings = AuthSettings(
            policy_file=self.policy_file,
            api_keys_file=self.keys_file,
            jwks_file=self.idp.write_jwks(tmp_path / "jwks.json"),
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
        )
        self.gate = Gate.from_settings(self.settings)


@pytest.fixture
def setup(tmp_path: Path, keys: dict[str, tuple[str, KeyEntry]]) -> Setup:
    return Setup(tmp_path, keys)


def bearer(token: str) -> Credentials:
    return Credentials.from_headers([("authorization", f"Bearer {token}")], peer="ipv4:127.0.0.1:5")


def test_headers_are_read_the_same_from_grpc_metadata_and_http() -> None:
    assert Credentials.from_headers([("authorization", b"Bearer mpk_ab_cd")]).api_key == "mpk_ab_cd"
    assert Credentials.from_headers({"Authorization": "bearer eyJ.x.y"}).bearer == "eyJ.x.y"
    assert Credentials.from_headers([("x-api-key", "mpk_ab_cd")]).api_key == "mpk_ab_cd"
    assert Credentials.from_headers([("user-agent", "grpc")]).token is None
    for bad in (
        [("authorization", "Basic dTpw")],
        [("authorization", "Bearer ")],
        [("x-api-key", "")],
        [("authorization", "Bearer a"), ("x-api-key", "b")],
        [("authorization", "Bearer a"), ("authorization", "Bearer b")],
    ):
        assert Credentials.from_headers(bad).malformed


CASES = {
    "none": lambda s: Credentials.from_headers([]),
    "wrong key": lambda s: bearer(s.key_a[:-3] + "xyz"),
    "expired token": lambda s: bearer(s.idp.token("team-b", lifetime=-600)),
    "unauthorized": lambda s: bearer(s.key_c),
    "authorized": lambda s: bearer(s.key_a),
}
EXPECTED = {
    "none": Unauthenticated,
    "wrong key": Unauthenticated,
    "expired token": Unauthenticated,
    "unauthorized": PermissionDenied,
    "authorized": None,
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("action", ["infer", "metadata"])
async def test_the_matrix_of_callers(setup: Setup, case: str, action: str) -> None:
    creds = CASES[case](setup)
    expected = EXPECTED[case]
    if expected is None:
        with await setup.gate.admit(creds, action, "fraud", counted=False) as admitted:
            assert admitted.principal.tenant == "team-a"
        return
    with pytest.raises(expected) as error:
        await setup.gate.admit(creds, action, "fraud")
    if expected is PermissionDenied:
        assert str(error.value) == f"tenant 'team-c' may not '{action}' model 'fraud'"
    else:
        assert "team" not in str(error.value) and "fraud" not in str(error.value)


async def test_authorization_comes_before_quota_and_quota_answers_retry_after(
    setup: Setup,
) -> None:
    creds = bearer(setup.key_a)
    for _ in range(2):
        (await setup.gate.admit(creds, "infer", "fraud")).release()
    with pytest.raises(PermissionDenied):  # not a quota answer: it says nothing about usage
        await setup.gate.admit(creds, "infer", "other-model")
    with pytest.raises(QuotaExceeded) as error:
        await setup.gate.admit(creds, "infer", "fraud")
    assert 0 < error.value.retry_after_seconds <= 1.0
    status, headers = http_status(error.value)
    assert status == 429 and headers == {"Retry-After": "1"}


async def test_jwt_and_peer_identities(setup: Setup) -> None:
    token = setup.idp.token("team-b", roles=[])
    admitted = await setup.gate.admit(bearer(token), "stream", "any-model", counted=False)
    assert (admitted.principal.tenant, admitted.principal.method) == ("team-b", "jwt")
    peer = Credentials.from_headers([], peer_identities=["router.svc", ROUTER_ID])
    admitted = await setup.gate.admit(peer, "infer", "any-model")
    assert (admitted.principal.tenant, admitted.principal.method) == ("router", "mtls")
    stranger = Credentials.from_headers([], peer_identities=["someone.else"])
    with pytest.raises(Unauthenticated):
        await setup.gate.admit(stranger, "infer", "any-model")
    # A bad secret is refused even on a connection with a good certificate.
    bad = Credentials.from_headers([("x-api-key", "mpk_00000000_x")], peer_identities=[ROUTER_ID])
    with pytest.raises(Unauthenticated):
        await setup.gate.admit(bad, "infer", "any-model")


async def test_verified_keys_are_cached_until_the_key_file_changes(setup: Setup) -> None:
    authenticator = setup.gate.authenticator
    assert authenticator.api_keys is not None
    calls = []
    real_verify = authenticator.api_keys.verify

    def counting_verify(key: str, now: float):  # type: ignore[no-untyped-def]
        calls.append(key)
        return real_verify(key, now)

    authenticator.api_keys.verify = counting_verify  # type: ignore[method-assign]
    started = time.perf_counter()
    for _ in range(50):
        await setup.gate.admit(bearer(setup.key_a), "metadata", "fraud", counted=False)
    assert len(calls) == 1, "scrypt runs once per key, not per request"
    assert time.perf_counter() - started < 5
    wrong = bearer(setup.key_a[:-3] + "xyz")
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await setup.gate.admit(wrong, "metadata", "fraud")
    assert len(calls) == 2, "a failure is remembered briefly too"
    setup.keys_file.write_text(yaml.safe_dump({"keys": []}))  # every key revoked
    assert authenticator.api_keys.reload()
    with pytest.raises(Unauthenticated):
        await setup.gate.admit(bearer(setup.key_a), "metadata", "fraud")


async def test_a_policy_edit_takes_effect_without_restart(setup: Setup) -> None:
    creds = bearer(setup.key_c)
    with pytest.raises(PermissionDenied):
        await setup.gate.admit(creds, "infer", "fraud")
    setup.policy_file.write_text(
        POLICY.replace("tenants:\n", "tenants:\n  team-c: {roles: [reader]}\n")
    )
    assert setup.gate.reload()
    admitted = await setup.gate.admit(creds, "infer", "fraud")
    assert admitted.principal.tenant == "team-c"
    assert setup.gate.visible(admitted.principal, "metadata", ["a", "b"]) == ["a", "b"]
    setup.policy_file.write_text("tenants: [broken")  # a bad edit keeps the last good policy
    assert not setup.gate.reload()
    assert (await setup.gate.admit(creds, "infer", "fraud")).principal.tenant == "team-c"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (Unauthenticated("x"), 401),
        (PermissionDenied("x"), 403),
        (NotFound("x"), 404),
        (ModelportError("x"), 500),
    ],
)
def test_http_statuses(error: ModelportError, status: int) -> None:
    assert http_status(error)[0] == status
    if status == 401:
        assert http_status(error)[1]["WWW-Authenticate"].startswith("Bearer")
