"""Traffic policies and the routing decision for one request.

A policy belongs to a model and comes from the registry (or any
`PolicySource`). The planner turns (model, model_version, session) into a
`Plan`: which model/version to call, whether to shadow a copy, or whether to
fan out (ensemble) or split the batch (scatter).

`model_version` semantics: "" → the model's policy (or its `production`
alias, or whatever the replicas serve by default); a number → that version;
any other string → an alias, resolved to a version.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from modelport.errors import InvalidInput, NotFound

DEFAULT_ALIAS = "production"


@dataclass(frozen=True)
class Target:
    model: str
    version: str  # "" = whatever the replicas serve by default


@dataclass(frozen=True)
class MemberRef:
    """An ensemble member: a model and a version reference ("", number or alias)."""

    model: str
    version_ref: str = ""

    @classmethod
    def parse(cls, text: str) -> MemberRef:
        """The registry's reference syntax: `model`, `model@alias` or `model:version`."""
        text = text.strip()
        if "@" in text:
            model, _, ref = text.partition("@")
        else:
            model, _, ref = text.partition(":")
            if ref and not ref.isdigit():
                raise InvalidInput(f"ensemble member '{text}': version must be a number")
        if not model or ("@" in text and not ref):
            raise InvalidInput(f"ensemble member '{text}': expected MODEL, MODEL@ALIAS or MODEL:N")
        return cls(model, ref)

    def __str__(self) -> str:
        if not self.version_ref:
            return self.model
        separator = ":" if self.version_ref.isdigit() else "@"
        return f"{self.model}{separator}{self.version_ref}"


@dataclass(frozen=True)
class TrafficPolicy:
    split: tuple[tuple[str, int], ...] = ()  # (alias, weight)
    shadow_alias: str = ""
    ensemble: tuple[MemberRef, ...] = ()
    scatter: bool = False
    revision: int = 0

    def is_empty(self) -> bool:
        return not (self.split or self.shadow_alias or self.ensemble or self.scatter)


@dataclass(frozen=True)
class RoutingState:
    """Everything a source knows: per model, its policy and alias → version."""

    policies: dict[str, TrafficPolicy] = field(default_factory=dict)
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    revision: int = 0
    # Models the registry marks pooled → their memory estimate in bytes (0: unknown).
    # None: the source does not say (static policies), and the pool takes any model
    # no deployment serves.
    pooled: dict[str, int] | None = None


OnState = Callable[[RoutingState], None]


class PolicySource(Protocol):
    async def run(self, on_state: OnState) -> None:
        """Report the state now and after each change; runs until cancelled.

        A source that loses its upstream keeps quiet: the last reported state
        stays in force.
        """
        ...


class StaticPolicySource:
    """A fixed or test-driven state; `set()` publishes a new one."""

    def __init__(self, state: RoutingState | None = None) -> None:
        self.state = state or RoutingState()
        self._listeners: list[OnState] = []

    def set(self, state: RoutingState) -> None:
        self.state = state
        for listener in self._listeners:
            listener(state)

    async def run(self, on_state: OnState) -> None:
        self._listeners.append(on_state)
        on_state(self.state)
        try:
            await asyncio.Event().wait()
        finally:
            self._listeners.remove(on_state)


@dataclass(frozen=True)
class Plan:
    kind: str  # "single" | "ensemble" | "scatter"
    targets: tuple[Target, ...]
    shadow: Target | None = None
    split_alias: str = ""  # the alias a split chose (for metrics), "" otherwise


def is_version_number(ref: str) -> bool:
    return ref.isdigit()


# Plans that do not depend on chance are reused; the cap bounds what callers'
# arbitrary model names can make the cache hold.
PLAN_CACHE_SIZE = 4096


Served = Callable[[str, str], bool]  # (model, version) -> some replica takes it now

# Versions an alias resolved to that the planner keeps, to fall back on while a
# move waits: the last one may already be gone (a move undone before it settled).
EFFECTIVE_HISTORY = 4


class Planner:
    """Plans requests from the routing state and, when `served` is given, from what
    replicas serve: an alias resolves to its registry version once some replica
    serves it, and until then to the newest version it resolved to before that a
    replica still serves (the move waits for the replicas, so no request goes where
    nothing serves it; a rollback that lands while replicas still load the move it
    undoes goes back to the version served before that move, not to nothing). A split
    never sends traffic to an alias that no replica serves while another of its
    aliases is served. Call `replicas_changed` after every change of the table.
    """

    def __init__(self, rng: random.Random | None = None, served: Served | None = None) -> None:
        self.state = RoutingState()
        self._rng = rng or random.Random()
        self._fixed: dict[tuple[str, str], Plan] = {}
        self.served = served
        # (model, alias) -> the versions it resolved to while a replica served them,
        # newest last (a few: the move before the last may be the one still served).
        self._effective: dict[tuple[str, str], list[str]] = {}

    def update(self, state: RoutingState) -> None:
        self.state = state
        self._fixed = {}

    def replicas_changed(self) -> None:
        self._fixed = {}

    def alias_version(self, model: str, alias: str) -> str | None:
        """The version `alias` routes to now (None: the alias is unknown)."""
        target = self.state.aliases.get(model, {}).get(alias)
        if self.served is None:
            return target
        key = (model, alias)
        if target is not None and self.served(model, target):
            history = self._effective.setdefault(key, [])  # known aliases only
            if not history or history[-1] != target:
                if target in history:
                    history.remove(target)
                history.append(target)
                del history[:-EFFECTIVE_HISTORY]
            return target
        for previous in reversed(self._effective.get(key, ())):
            if self.served(model, previous):
                return previous  # the move waits until a replica serves `target`
        return target

    def waiting(self, model: str) -> dict[str, tuple[str, str]]:
        """alias -> (registry version, version served instead) for aliases whose move
        waits for a replica (what `routes` shows)."""
        out: dict[str, tuple[str, str]] = {}
        for alias, target in self.state.aliases.get(model, {}).items():
            now = self.alias_version(model, alias)
            if now is not None and now != target:
                out[alias] = (target, now)
        return out

    def is_served(self, model: str, alias: str) -> bool:
        version = self.alias_version(model, alias)
        return version is not None and (self.served is None or self.served(model, version))

    def policy(self, model: str) -> TrafficPolicy:
        return self.state.policies.get(model) or TrafficPolicy()

    def resolve(self, model: str, ref: str) -> str:
        """A version reference → a version ("" stays "": the backend's default)."""
        if ref == "" or is_version_number(ref):
            return ref
        version = self.alias_version(model, ref)
        if version is None:
            # Triton's words first: a Triton client sees the version string it sent refused.
            raise NotFound(
                f"failed to get model version from specified version string '{ref}' "
                f"(model '{model}': unknown alias '{ref}' in model_version)"
            )
        return version

    def _member_version(self, member: MemberRef) -> str:
        return self.resolve(member.model, member.version_ref) or self._default_version(member.model)

    def _default_version(self, model: str) -> str:
        return self.alias_version(model, DEFAULT_ALIAS) or ""

    def _choose_split(self, model: str, split: tuple[tuple[str, int], ...], session: str) -> str:
        total = sum(weight for _, weight in split)
        if total <= 0:
            return split[0][0]
        if session:
            # Sticky: the same session lands on the same alias while weights hold.
            digest = hashlib.blake2b(f"{model}\0{session}".encode(), digest_size=8).digest()
            point = int.from_bytes(digest, "big") % total
        else:
            point = self._rng.randrange(total)
        for alias, weight in split:
            if point < weight:
                return alias
            point -= weight
        return split[-1][0]

    def plan(self, model: str, version_ref: str, session: str = "") -> Plan:
        fixed = self._fixed.get((model, version_ref))
        if fixed is not None:
            return fixed
        plan = self._plan(model, version_ref, session)
        if not plan.split_alias and len(self._fixed) < PLAN_CACHE_SIZE:
            self._fixed[(model, version_ref)] = plan
        return plan

    def _plan(self, model: str, version_ref: str, session: str) -> Plan:
        if version_ref:
            return Plan("single", (Target(model, self.resolve(model, version_ref)),))
        policy = self.policy(model)
        if policy.ensemble:
            members = tuple(Target(m.model, self._member_version(m)) for m in policy.ensemble)
            return Plan("ensemble", members)
        alias = ""
        if policy.split:
            split = policy.split
            if self.served is not None:
                # Traffic stays where it is served: aliases no replica serves take no share.
                served = tuple((a, w) for a, w in split if self.is_served(model, a))
                split = served or split
            alias = self._choose_split(model, split, session)
            version = self.resolve(model, alias)
        else:
            version = self._default_version(model)
        shadow = None
        shadow_version = self.alias_version(model, policy.shadow_alias)
        if policy.shadow_alias and shadow_version is not None:
            # An unknown shadow alias only skips the copy; the caller is served.
            shadow = Target(model, shadow_version)
        kind = "scatter" if policy.scatter else "single"
        return Plan(kind, (Target(model, version),), shadow=shadow, split_alias=alias)
