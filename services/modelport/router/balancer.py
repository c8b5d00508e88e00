"""Per-request balancing: least outstanding requests, power of two choices.

Among the replicas that take traffic and serve the wanted version, two are
drawn at random and the one with fewer requests in flight wins. That keeps
load even without a global scan and without herding on one idle replica, and
a replica that just joined (zero in flight) starts winning at once.

Requests of a sequence (a stateful model's correlation id) go to one replica
instead: rendezvous hashing of the id over the candidates' addresses, so every
router picks the same replica, and a replica joining or leaving moves only
the sequences it gains or held.

Generation streams of a model whose replicas report their load go to the least
loaded replica by those reports (`load_board`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection

from modelport.errors import NotFound, Unavailable
from modelport.router.load_board import LoadBoard
from modelport.router.replicas import Replica, ReplicaTable


def describe(model: str, version: str) -> str:
    return f"model '{model}'" + (f" version '{version}'" if version else "")


class Balancer:
    def __init__(
        self,
        table: ReplicaTable,
        rng: random.Random | None = None,
        loads: LoadBoard | None = None,
    ) -> None:
        self.table = table
        self._rng = rng or random.Random()
        self.loads = loads or LoadBoard(rng=self._rng)

    def _pool(self, model: str, version: str, exclude: Collection[Replica]) -> list[Replica]:
        """The candidates not excluded, the healthy ones if any (NotFound / Unavailable)."""
        candidates = self.table.candidates(model, version)
        if exclude:
            candidates = [r for r in candidates if r not in exclude]
        if not candidates:
            raise self._why_none(model, version, bool(exclude))
        now = self.table.clock()
        healthy = [r for r in candidates if r.ejected_until <= now]
        # When every candidate is ejected, keep serving from them rather than
        # failing everything: ejection is a hint, not a verdict.
        return healthy or candidates

    def pick(self, model: str, version: str, exclude: Collection[Replica] = ()) -> Replica:
        """The replica for one request, or NotFound / Unavailable naming the model."""
        pool = self._pool(model, version, exclude)
        if len(pool) == 1:
            return pool[0]
        first, second = self._rng.sample(pool, 2)
        if second.in_flight < first.in_flight:
            return second
        return first

    def pick_stream(self, model: str, version: str, exclude: Collection[Replica] = ()) -> Replica:
        """The replica for one streamed request: by reported load for a generative model."""
        if not self.loads.knows(model):
            return self.pick(model, version, exclude)
        return self.loads.least_loaded(self._pool(model, version, exclude), model)

    def pick_for_key(
        self, model: str, version: str, key: str, exclude: Collection[Replica] = ()
    ) -> Replica:
        """The replica that owns `key` (a sequence's correlation id) among the candidates."""
        return max(self._pool(model, version, exclude), key=lambda r: _weight(key, r.address))

    def pick_many(self, model: str, version: str, count: int) -> list[Replica]:
        """Up to `count` distinct replicas, least loaded first (for scatter)."""
        candidates = self.table.candidates(model, version)
        if not candidates:
            raise self._why_none(model, version, False)
        now = self.table.clock()
        healthy = [r for r in candidates if not r.is_ejected(now)] or list(candidates)
        self._rng.shuffle(healthy)
        healthy.sort(key=lambda r: r.in_flight)
        return healthy[:count]

    def _why_none(self, model: str, version: str, retrying: bool) -> Exception:
        what = describe(model, version)
        replicas = self.table.replicas.values()
        if model not in self.table.known_models():
            # Triton's words (its clients and examples look for them), then the router's.
            return NotFound(
                f"Request for unknown model: '{model}' is not found (no replica serves it)"
            )
        if retrying:
            return Unavailable(f"{what}: no other ready replica to retry on")
        indexed = [r for r in replicas if r.versions is not None and model in r.versions]
        if version and indexed and not any(version in (r.versions or {})[model] for r in indexed):
            return NotFound(f"{what}: no replica serves this version")
        return Unavailable(f"{what}: no ready replica")


def _weight(key: str, address: str) -> int:
    digest = hashlib.blake2b(f"{key}\x00{address}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
