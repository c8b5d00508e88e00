"""What the router knows about each replica, and the table of them.

A replica is one gRPC endpoint (`host:port`) found by discovery. It may serve
several models; which versions of each it serves comes from its own
RepositoryIndex, polled by `VersionPoller`. The table is mutated only from the
event loop, so no locks are needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """One (model, address) pair as discovery reports it."""

    model: str
    address: str
    ready: bool = True
    terminating: bool = False


@dataclass(eq=False)
class Replica:
    address: str
    models: frozenset[str] = frozenset()
    ready: bool = True
    terminating: bool = False
    # model -> versions READY on this replica; None until its index was read.
    versions: dict[str, frozenset[str]] | None = None
    in_flight: int = 0
    picks: int = 0
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    # Opaque handle of the transport (a gRPC channel and its callables).
    handle: Any = None
    removed: bool = False

    def serves(self, model: str, version: str) -> bool:
        if self.versions is None or model not in self.models:
            return False
        served = self.versions.get(model)
        if served is None:
            return False
        return version == "" or version in served

    def takes_traffic(self) -> bool:
        return self.ready and not self.terminating and not self.removed

    def is_ejected(self, now: float) -> bool:
        return self.ejected_until > now


@dataclass
class EjectionRule:
    """Passive outlier detection: consecutive transport failures eject a replica.

    The ejection time doubles with each ejection in a row (capped), and a
    success resets both counters.
    """

    consecutive_failures: int = 3
    base_seconds: float = 5.0
    max_seconds: float = 60.0


@dataclass
class ReplicaTable:
    clock: Callable[[], float] = time.monotonic
    ejection: EjectionRule = field(default_factory=EjectionRule)
    replicas: dict[str, Replica] = field(default_factory=dict)
    # (model, version) -> replicas taking traffic for it; rebuilt after any change.
    _candidates: dict[tuple[str, str], list[Replica]] = field(default_factory=dict)
    _known: frozenset[str] | None = None  # known_models(), kept until the next change
    # Told after every change of replicas, readiness or versions (releases held requests).
    on_change: Callable[[], None] | None = None

    def apply(self, endpoints: Iterable[Endpoint]) -> tuple[list[Replica], list[Replica]]:
        """Make the table match discovery; returns (added, removed) replicas."""
        models: dict[str, set[str]] = {}
        ready: dict[str, bool] = {}
        terminating: dict[str, bool] = {}
        for ep in endpoints:
            models.setdefault(ep.address, set()).add(ep.model)
            ready[ep.address] = ready.get(ep.address, False) or ep.ready
            terminating[ep.address] = terminating.get(ep.address, False) or ep.terminating
        added: list[Replica] = []
        removed: list[Replica] = []
        for address in list(self.replicas):
            if address not in models:
                replica = self.replicas.pop(address)
                replica.removed = True
                removed.append(replica)
        for address, names in models.items():
            known = self.replicas.get(address)
            if known is None:
                replica = Replica(address=address)
                self.replicas[address] = replica
                added.append(replica)
            else:
                replica = known
            replica.models = frozenset(names)
            replica.ready = ready[address]
            replica.terminating = terminating[address]
        self._candidates.clear()
        self._changed()
        return added, removed

    def set_versions(self, replica: Replica, versions: dict[str, frozenset[str]]) -> None:
        if versions != replica.versions:
            replica.versions = versions
            self._candidates.clear()
            self._changed()

    def knows(self, model: str) -> bool:
        """Some replica is meant to serve `model` (cheap: for labelling every request)."""
        if self._known is None:
            self._known = frozenset(self.known_models())
        return model in self._known

    def _changed(self) -> None:
        self._known = None
        if self.on_change is not None:
            self.on_change()

    def known_models(self) -> set[str]:
        names: set[str] = set()
        for replica in self.replicas.values():
            names |= replica.models
            if replica.versions:
                names |= set(replica.versions)
        return names

    def candidates(self, model: str, version: str) -> list[Replica]:
        """Replicas that may take this request (a shared list: do not mutate)."""
        key = (model, version)
        found = self._candidates.get(key)
        if found is None:
            found = [
                r for r in self.replicas.values() if r.takes_traffic() and r.serves(model, version)
            ]
            if found:  # names from callers are unbounded; only real routes are kept
                self._candidates[key] = found
        return found

    # Outcome bookkeeping, called by the forwarder around each backend call.
    def started(self, replica: Replica) -> None:
        replica.in_flight += 1
        replica.picks += 1

    def succeeded(self, replica: Replica) -> None:
        replica.in_flight -= 1
        replica.consecutive_failures = 0
        replica.ejections = 0

    def failed(self, replica: Replica, *, transport: bool) -> bool:
        """Record a failure; returns True when it just ejected the replica."""
        replica.in_flight -= 1
        if not transport:
            # The backend answered (e.g. INVALID_ARGUMENT): it is healthy.
            replica.consecutive_failures = 0
            return False
        replica.consecutive_failures += 1
        if replica.consecutive_failures < self.ejection.consecutive_failures:
            return False
        seconds = min(
            self.ejection.base_seconds * (2**replica.ejections), self.ejection.max_seconds
        )
        replica.ejections += 1
        replica.consecutive_failures = 0
        replica.ejected_until = self.clock() + seconds
        return True
