"""Deny-by-default authorization: who may do which action on which models.

The policy file (YAML; a ConfigMap or Secret) grants actions on model-name
patterns to roles and tenants; anything not granted is denied.

    roles:
      reader:
        - {actions: [infer, metadata, stream, statistics], models: ["*"]}
      publisher:
        - {actions: [read, push, alias], models: ["{tenant}-*"]}   # {tenant}: the caller's
    tenants:
      team-a:
        roles: [reader, publisher]
        grants:
          - {actions: [model-control], models: [team-a-fraud]}
        quota: {requests_per_second: 50, burst: 100, concurrency: 8,
                upload_bytes_per_day: 10Gi, models: {team-a-fraud: {requests_per_second: 10}}}
    defaults:
      quota: {requests_per_second: 10, concurrency: 4}   # tenants without a quota of their own
    peers:                                               # mTLS identities, see auth.peers
      "spiffe://modelport.local/router": {tenant: router}

A principal's roles are those its credential carries (API key entry, JWT
claim, peer rule) plus its tenant's. `admin` on the registry implies every
other registry action; `*` in `actions` means every action.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import yaml

from modelport.auth.identity import Principal
from modelport.auth.peers import PeerIdentities
from modelport.auth.quotas import QuotaSpec
from modelport.errors import InvalidInput, PermissionDenied

INFERENCE_ACTIONS = ("infer", "metadata", "stream", "statistics", "model-control")
REGISTRY_ACTIONS = ("read", "push", "alias", "policy", "delete", "admin")
ACTIONS = frozenset(INFERENCE_ACTIONS + REGISTRY_ACTIONS)
IMPLIED = {"admin": frozenset(REGISTRY_ACTIONS)}
OTHER_TENANTS = "other"  # the metrics label of tenants the policy does not name


@dataclass(frozen=True)
class Grant:
    actions: frozenset[str]
    models: tuple[str, ...]

    def allows(self, action: str, model: str, tenant: str) -> bool:
        if action not in self.actions:
            return False
        return any(fnmatchcase(model, p.replace("{tenant}", tenant)) for p in self.models)

    @classmethod
    def from_config(cls, item: Any, where: str) -> Grant:
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{where}: a grant is {{actions: [...], models: [...]}}")
        actions, models = item.get("actions"), item.get("models")
        if not isinstance(actions, list) or not actions:
            raise InvalidInput(f"{where}.actions: a non-empty list")
        if not isinstance(models, list) or not models:
            raise InvalidInput(f"{where}.models: a non-empty list of names or patterns")
        if set(item) - {"actions", "models"}:
            raise InvalidInput(
                f"{where}: unknown fields {sorted(set(item) - {'actions', 'models'})}"
            )
        names = {str(a) for a in actions}
        if "*" in names:
            names = set(ACTIONS)
        unknown = names - ACTIONS
        if unknown:
            raise InvalidInput(
                f"{where}.actions: unknown {sorted(unknown)}; known: {', '.join(sorted(ACTIONS))}"
            )
        for name in list(names):
            names |= IMPLIED.get(name, frozenset())
        return cls(frozenset(names), tuple(str(m) for m in models))


@dataclass(frozen=True)
class TenantEntry:
    roles: frozenset[str] = frozenset()
    grants: tuple[Grant, ...] = ()
    quota: QuotaSpec | None = None


def _grants(items: Any, where: str) -> tuple[Grant, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise InvalidInput(f"{where}: a list of grants")
    return tuple(Grant.from_config(g, f"{where}[{i}]") for i, g in enumerate(items))


def _mapping(document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = document.get(key) or {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"policy: '{key}' is a mapping")
    return value


@dataclass(frozen=True)
class Policy:
    roles: Mapping[str, tuple[Grant, ...]] = field(default_factory=dict)
    tenants: Mapping[str, TenantEntry] = field(default_factory=dict)
    peers: PeerIdentities = field(default_factory=PeerIdentities)
    default_quota: QuotaSpec | None = None
    # (tenant, roles, action, model) -> allowed: the same question is asked per
    # request; a policy is immutable (a reloaded file is a new Policy), so answers keep.
    _decisions: dict[tuple[str, frozenset[str], str, str], bool] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def parse(cls, data: bytes | str) -> Policy:
        document = yaml.safe_load(data) or {}
        if not isinstance(document, Mapping):
            raise InvalidInput("policy: the file is a mapping of roles, tenants, defaults, peers")
        unknown = set(document) - {"roles", "tenants", "defaults", "peers"}
        if unknown:
            raise InvalidInput(f"policy: unknown sections {sorted(unknown)}")
        roles = {str(n): _grants(g, f"roles.{n}") for n, g in _mapping(document, "roles").items()}
        tenants = {}
        for name, item in _mapping(document, "tenants").items():
            where = f"tenants.{name}"
            if not isinstance(item, Mapping):
                raise InvalidInput(f"{where}: a mapping of roles, grants, quota")
            if set(item) - {"roles", "grants", "quota"}:
                raise InvalidInput(
                    f"{where}: unknown fields {sorted(set(item) - {'roles', 'grants', 'quota'})}"
                )
            own_roles = item.get("roles") or []
            if not isinstance(own_roles, list):
                raise InvalidInput(f"{where}.roles: a list of role names")
            missing = {str(r) for r in own_roles} - set(roles)
            if missing:
                raise InvalidInput(f"{where}.roles: {sorted(missing)} not defined under 'roles'")
            quota = item.get("quota")
            tenants[str(name)] = TenantEntry(
                frozenset(map(str, own_roles)),
                _grants(item.get("grants"), f"{where}.grants"),
                None if quota is None else QuotaSpec.from_config(quota, f"{where}.quota"),
            )
        defaults = _mapping(document, "defaults")
        default_quota = defaults.get("quota")
        return cls(
            roles=roles,
            tenants=tenants,
            peers=PeerIdentities.from_config(document.get("peers")),
            default_quota=(
                None
                if default_quota is None
                else QuotaSpec.from_config(default_quota, "defaults.quota")
            ),
        )

    def grants_of(self, principal: Principal) -> list[Grant]:
        entry = self.tenants.get(principal.tenant, TenantEntry())
        grants = list(entry.grants)
        for role in sorted(principal.roles | entry.roles):
            grants.extend(self.roles.get(role, ()))
        return grants

    def allows(self, principal: Principal, action: str, model: str) -> bool:
        if principal.scope is not None:  # confined: the policy grants it nothing more
            actions, models = principal.scope
            return action in actions and (not model or model in models)
        key = (principal.tenant, principal.roles, action, model)
        decision = self._decisions.get(key)
        if decision is None:
            decision = any(
                g.allows(action, model, principal.tenant) for g in self.grants_of(principal)
            )
            if len(self._decisions) >= 10_000:  # bounded: model names come from callers
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def allows_owned(self, principal: Principal, action: str, model: str, owner: str) -> bool:
        """Something tenant `owner` created about `model` (a training job): its owner
        with `action` on the model, or anyone who may `admin` the model (operators).
        Reading the model alone shows no one another tenant's jobs."""
        if owner and owner == principal.tenant and self.allows(principal, action, model):
            return True
        return self.allows(principal, "admin", model)

    def check(self, principal: Principal, action: str, model: str) -> None:
        """PermissionDenied naming the action and model, asked before looking the model
        up, so the answer is the same whether or not it exists."""
        if not self.allows(principal, action, model):
            target = f"model '{model}'" if model else "this service"
            raise PermissionDenied(f"tenant '{principal.tenant}' may not '{action}' {target}")

    def visible(self, principal: Principal, action: str, models: Iterable[str]) -> list[str]:
        """Those of `models` the principal may `action` (what an index may list)."""
        return [m for m in models if self.allows(principal, action, m)]

    def quota_of(self, tenant: str) -> QuotaSpec | None:
        entry = self.tenants.get(tenant)
        if entry is not None and entry.quota is not None:
            return entry.quota
        return self.default_quota

    def metric_label(self, tenant: str) -> str:
        """The tenant as a metrics label: only tenants the policy names get their own
        series, so a flood of distinct JWT tenants cannot explode cardinality."""
        if tenant in self.tenants or tenant in self.peers.tenants:
            return tenant
        return OTHER_TENANTS
