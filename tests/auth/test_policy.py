"""The authorization policy: deny by default, roles and grants on model patterns."""

from __future__ import annotations

import pytest
from modelport.auth.identity import Principal
from modelport.auth.policy import ACTIONS, REGISTRY_ACTIONS, Policy
from modelport.errors import InvalidInput, PermissionDenied

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

POLICY = """
roles:
  reader:
    - {actions: [infer, metadata, stream, statistics], models: ["*"]}
  publisher:
    - {actions: [read, push, alias], models: ["{tenant}-*"]}
  operator:
    - {actions: [admin], models: ["shared-*"]}
tenants:
  team-a:
    roles: [publisher]
    grants:
      - {actions: [infer, metadata], models: [team-a-*, shared-mlp]}
      - {actions: [model-control], models: [team-a-fraud]}
    quota: {requests_per_second: 5}
  team-b:
    roles: [reader]
  root:
    grants: [{actions: ["*"], models: ["*"]}]
defaults:
  quota: {requests_per_second: 1}
peers:
  "spiffe://modelport.local/router": {tenant: router}
"""


def who(tenant: str, *roles: str) -> Principal:
    return Principal(tenant, f"key:{tenant}", "api-key", frozenset(roles))


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.parse(POLICY)


@pytest.mark.parametrize(
    ("principal", "action", "model", "allowed"),
    [
        (who("team-a"), "infer", "team-a-fraud", True),
        (who("team-a"), "infer", "shared-mlp", True),
        (who("team-a"), "infer", "shared-other", False),
        (who("team-a"), "stream", "team-a-fraud", False),  # stream is its own action
        (who("team-a"), "push", "team-a-new", True),  # {tenant} pattern via the role
        (who("team-a"), "push", "team-b-x", False),
        (who("team-a"), "delete", "team-a-fraud", False),
        (who("team-a"), "model-control", "team-a-fraud", True),
        (who("team-a"), "model-control", "team-a-other", False),
        (who("team-b"), "stream", "anything", True),
        (who("team-b"), "push", "team-b-x", False),
        (who("team-b", "publisher"), "push", "team-b-x", True),  # a role the credential carries
        (who("team-b", "operator"), "delete", "shared-mlp", True),  # admin implies delete
        (who("team-b", "operator"), "model-control", "shared-mlp", False),  # …not inference control
        (who("team-b", "no-such-role"), "push", "team-b-x", False),
        (who("stranger"), "infer", "team-a-fraud", False),  # deny by default
        (who("stranger", "reader"), "infer", "team-a-fraud", True),
        (who("root"), "admin", "", True),
        (who("root"), "model-control", "x", True),
    ],
)
def test_grants(
    policy: Policy, principal: Principal, action: str, model: str, allowed: bool
) -> None:
    assert policy.allows(principal, action, model) is allowed


def test_admin_implies_every_registry_action_only() -> None:
    policy = Policy.parse("tenants: {ops: {grants: [{actions: [admin], models: ['*']}]}}")
    allowed = {a for a in ACTIONS if policy.allows(who("ops"), a, "m")}
    assert allowed == set(REGISTRY_ACTIONS)


def test_a_refusal_names_the_action_and_model_and_nothing_else(policy: Policy) -> None:
    with pytest.raises(PermissionDenied) as error:
        policy.check(who("team-b"), "push", "team-b-secret-project")
    assert str(error.value) == "tenant 'team-b' may not 'push' model 'team-b-secret-project'"
    with pytest.raises(PermissionDenied, match="may not 'admin' this service"):
        policy.check(who("team-b"), "admin", "")
    policy.check(who("team-a"), "infer", "team-a-fraud")  # allowed: no exception


def test_visible_lists_only_what_the_caller_may_use(policy: Policy) -> None:
    models = ["team-a-fraud", "team-b-churn", "shared-mlp", "shared-other"]
    assert policy.visible(who("team-a"), "metadata", models) == ["team-a-fraud", "shared-mlp"]
    assert policy.visible(who("team-b"), "metadata", models) == models
    assert policy.visible(who("stranger"), "metadata", models) == []


def test_something_a_tenant_owns_is_its_own_and_its_models_admins(policy: Policy) -> None:
    """A training job: its creator with the action on the job's model, or an admin of
    the model; reading (even every) model shows no one another tenant's job."""
    assert policy.allows_owned(who("team-a"), "read", "team-a-fraud", "team-a")
    assert not policy.allows_owned(who("team-a"), "read", "team-b-x", "team-a")  # no grant
    readers = Policy.parse("tenants: {r: {grants: [{actions: [read, push], models: ['*']}]}}")
    assert not readers.allows_owned(who("r"), "read", "team-a-fraud", "team-a")
    assert readers.allows_owned(who("r"), "push", "team-a-fraud", "r")
    assert not policy.allows_owned(who("team-a"), "read", "team-a-fraud", "")  # no owner
    assert policy.allows_owned(who("team-b", "operator"), "push", "shared-mlp", "team-a")
    assert policy.allows_owned(who("root"), "read", "team-a-fraud", "team-a")


def test_quotas_and_metric_labels(policy: Policy) -> None:
    assert policy.quota_of("team-a").requests_per_second == 5  # type: ignore[union-attr]
    assert policy.quota_of("stranger").requests_per_second == 1  # type: ignore[union-attr]
    assert [policy.metric_label(t) for t in ("team-a", "router", "jwt-tenant-123")] == [
        "team-a",
        "router",
        "other",
    ]


def test_an_empty_policy_denies_everything() -> None:
    policy = Policy.parse("")
    assert not any(policy.allows(who("team-a", "reader"), a, "m") for a in ACTIONS)
    assert policy.quota_of("team-a") is None


@pytest.mark.parametrize(
    ("document", "fault"),
    [
        ("roles: {r: [{actions: [fly], models: ['*']}]}", "unknown \\['fly'\\]"),
        ("roles: {r: [{actions: [], models: ['*']}]}", "non-empty list"),
        ("roles: {r: [{actions: [infer], models: '*'}]}", "list of names"),
        ("roles: {r: [{actions: [infer], models: ['*'], when: x}]}", "unknown fields"),
        ("tenants: {t: {roles: [ghost]}}", "not defined under 'roles'"),
        ("tenants: {t: {quota: {requests_per_second: -1}}}", "positive"),
        ("tenants: {t: {quota: {rps: 1}}}", "unknown quota fields"),
        ("tenants: {t: {owner: x}}", "unknown fields"),
        ("rules: []", "unknown sections"),
        ("- a", "mapping"),
    ],
)
def test_malformed_policies_are_rejected(document: str, fault: str) -> None:
    with pytest.raises(InvalidInput, match=fault):
        Policy.parse(document)


def test_a_confined_identity_gets_its_scope_and_nothing_the_policy_grants(
    policy: Policy,
) -> None:
    # A derive worker acting as tenant `root` (every grant) is still held to its scope.
    worker = Principal("root", "job", "derive-token", scope=(frozenset({"read"}), frozenset({"m"})))
    assert policy.allows(worker, "read", "m")
    assert policy.allows(worker, "read", "")  # RPCs naming no model (its job's own)
    assert not policy.allows(worker, "read", "other")
    assert not policy.allows(worker, "delete", "m")
