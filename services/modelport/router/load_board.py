"""What the replicas last reported of their generative load, and the stream pick made on it.

A generation stream holds a slot of its replica's engine for seconds, and two
streams differ widely in what they cost (a long prompt holds many KV blocks),
so streams are not balanced by connections or by the router's own count of
requests alone. Each replica reports, per generative version, its running and
waiting sequences and its KV usage (`common.generative_load`; today in the
metadata of every stream it answers). A report is trusted for `fresh_seconds`;
the router's own count of the streams it has open on a replica is always
known, and is the floor of the estimate (a report may predate them).

The estimate of a replica's load for a model is
    max(own streams open, reported running + waiting) + kv_weight * kv usage
(a replica whose KV pool is nearly full will queue or preempt whatever comes
next, so KV counts once it passes `kv_high`). The least loaded candidate wins;
ties go to a random one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from modelport.common.generative_load import GenerativeLoad
from modelport.router.replicas import Replica


@dataclass
class LoadBoard:
    fresh_seconds: float = 10.0
    kv_high: float = 0.8
    kv_weight: float = 8.0
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    # (address, model) -> the replica's last report for that model (summed over versions)
    _loads: dict[tuple[str, str], GenerativeLoad] = field(default_factory=dict)
    reports: int = 0

    def report(self, address: str, loads: Sequence[GenerativeLoad]) -> None:
        """A `LoadSink`: the replica at `address` reported `loads`."""
        self.reports += 1
        by_model: dict[str, list[GenerativeLoad]] = {}
        for load in loads:
            by_model.setdefault(load.model, []).append(load)
        for model, parts in by_model.items():
            self._loads[(address, model)] = GenerativeLoad(
                model, "", sum(p.running for p in parts), sum(p.waiting for p in parts),
                max(p.kv_usage for p in parts), at=self.clock(),
            )  # fmt: skip

    def forget(self, address: str) -> None:
        for key in [k for k in self._loads if k[0] == address]:
            del self._loads[key]

    def reported(self, address: str, model: str) -> GenerativeLoad | None:
        """The replica's last report for `model`, if it is still fresh."""
        load = self._loads.get((address, model))
        if load is None or self.clock() - load.at > self.fresh_seconds:
            return None
        return load

    def estimate(self, replica: Replica, model: str) -> float:
        own = float(replica.in_flight)
        load = self.reported(replica.address, model)
        if load is None:
            return own
        queued = max(own, float(load.running + load.waiting))
        if load.kv_usage > self.kv_high:
            queued += self.kv_weight * load.kv_usage
        return queued

    def knows(self, model: str) -> bool:
        return any(m == model for _, m in self._loads)

    def least_loaded(self, pool: Sequence[Replica], model: str) -> Replica:
        scored = [(self.estimate(r, model), r) for r in pool]
        best = min(score for score, _ in scored)
        return self.rng.choice([r for score, r in scored if score == best])
