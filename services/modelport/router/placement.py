"""Which pool replica serves a model: warm first, then by free memory; hot ones spread.

A pool replica (`serve inference --pool`) loads models on demand under a
memory budget. The router keeps what each one reported: its budget, bytes in
use, and each model's state there (loading or ready) with its size. For a
request it picks:

1. a replica where the model is READY (a *hit*), least requests in flight;
   when every such replica is busier than `spread_in_flight` requests for the
   model and another replica can take a copy, that replica is also told to
   load it (the request still goes to a warm one) — hot models spread;
2. else a replica already LOADING it (single flight across the pool: one load,
   not one per request);
3. else (a *miss*) the replica with the most memory free once its idle models
   are counted as evictable, preferring one where it fits without evicting.

Transport-free: the router feeds it reports and forwards where it says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from modelport.errors import FailedPrecondition, NotFound

LOADING, READY = "LOADING", "READY"


@dataclass
class PooledModel:
    state: str  # LOADING or READY
    size_bytes: int  # measured once READY, the estimate while LOADING
    in_flight: int = 0
    version: int = 0  # 0: not reported yet (sent for loading)
    priority: int = 0

    def serves(self, version: int) -> bool:
        """Holds `version` (0: any), or may: a load not yet reported."""
        return not version or not self.version or self.version == version


@dataclass
class PoolReplica:
    address: str
    budget_bytes: int
    models: dict[str, PooledModel] = field(default_factory=dict)
    in_flight: int = 0
    ready: bool = True

    @property
    def used_bytes(self) -> int:
        return sum(m.size_bytes for m in self.models.values())

    @property
    def free_bytes(self) -> int:
        return self.budget_bytes - self.used_bytes

    def evictable_bytes(self) -> int:
        """Bytes of ready models with nothing in flight: what an LRU eviction may free."""
        return sum(
            m.size_bytes for m in self.models.values() if m.state == READY and m.in_flight == 0
        )


@dataclass(frozen=True)
class Placement:
    replica: PoolReplica
    hit: bool  # the model is ready there
    also_load: PoolReplica | None = None  # a second copy for a hot model


@dataclass
class PlacementStats:
    hits: Counter[str] = field(default_factory=Counter)
    misses: Counter[str] = field(default_factory=Counter)
    joins: Counter[str] = field(default_factory=Counter)  # sent to a replica still loading it
    spreads: Counter[str] = field(default_factory=Counter)


class PoolPlacer:
    def __init__(self, spread_in_flight: int = 8, max_copies: int = 0) -> None:
        # A hot model gets another copy when each warm replica has this many of
        # its requests in flight; `max_copies` bounds copies (0: every replica).
        self.spread_in_flight = spread_in_flight
        self.max_copies = max_copies
        self.replicas: dict[str, PoolReplica] = {}
        self.stats = PlacementStats()

    # -- reports -----------------------------------------------------------------

    def update(self, replica: PoolReplica) -> None:
        """A replica's report. The known object is updated in place: requests in
        flight hold it and count themselves off it when they finish."""
        known = self.replicas.get(replica.address)
        if known is None:
            self.replicas[replica.address] = replica
            return
        # Requests in flight are the router's own books; keep them.
        for name, model in replica.models.items():
            if name in known.models:
                model.in_flight = known.models[name].in_flight
        # A model sent for loading that the report does not show yet (the
        # request is still on its way) stays loading there: single flight.
        for name, model in known.models.items():
            if name not in replica.models and model.in_flight > 0:
                replica.models[name] = PooledModel(LOADING, model.size_bytes, model.in_flight)
        known.budget_bytes = replica.budget_bytes
        known.models = replica.models
        known.ready = replica.ready

    def remove(self, address: str) -> None:
        self.replicas.pop(address, None)

    def where(self, model: str) -> dict[str, str]:
        """address -> state of `model` there (for `modelport routes`)."""
        return {
            r.address: r.models[model].state for r in self.replicas.values() if model in r.models
        }

    # -- the decision --------------------------------------------------------------

    def place(
        self,
        model: str,
        estimate_bytes: int,
        exclude: Collection[str] = (),
        version: int = 0,
        count: bool = True,
    ) -> Placement:
        """Where to send a request for `model` at `version` (0: the pool's alias);
        `exclude`: addresses that just failed. A replica holding another version
        counts as one that must load it. `count`: a request (not a question about
        the model), counted in the hit/join/miss statistics."""
        stats = self.stats if count else PlacementStats()
        live = [r for r in self.replicas.values() if r.ready and r.address not in exclude]
        if not live:
            raise NotFound(f"model '{model}': no pool replica to place it on")
        warm = [r for r in live if _state(r, model, version) == READY]
        if warm:
            best = min(warm, key=lambda r: (r.models[model].in_flight, r.in_flight, r.address))
            stats.hits[model] += 1
            return Placement(
                best, hit=True, also_load=self._spread(model, warm, live, estimate_bytes)
            )
        loading = [r for r in live if _state(r, model, version) == LOADING]
        if loading:
            stats.joins[model] += 1
            return Placement(min(loading, key=lambda r: (r.in_flight, r.address)), hit=False)
        target = self._for_load(model, live, estimate_bytes)
        stats.misses[model] += 1
        return Placement(target, hit=False)

    def _spread(
        self,
        model: str,
        warm: list[PoolReplica],
        live: list[PoolReplica],
        estimate_bytes: int,
    ) -> PoolReplica | None:
        if any(r.models[model].in_flight < self.spread_in_flight for r in warm):
            return None
        holding = [r for r in live if model in r.models]
        if any(r.models[model].state == LOADING for r in holding):
            return None  # a copy is on its way
        if self.max_copies and len(holding) >= self.max_copies:
            return None
        others = [r for r in live if model not in r.models]
        fits = [r for r in others if r.free_bytes >= estimate_bytes]
        if not fits:
            return None  # a copy would evict others' models: not for spreading
        self.stats.spreads[model] += 1
        return max(fits, key=lambda r: (r.free_bytes, -r.in_flight, r.address))

    def _for_load(
        self, model: str, live: Iterable[PoolReplica], estimate_bytes: int
    ) -> PoolReplica:
        candidates = [r for r in live if r.budget_bytes >= estimate_bytes]
        if not candidates:
            largest = max(r.budget_bytes for r in live)
            raise FailedPrecondition(
                f"model '{model}' needs about {estimate_bytes} bytes, more than the largest "
                f"pool replica's memory budget ({largest} bytes)"
            )

        def score(r: PoolReplica) -> tuple[bool, int, int, str]:
            # Where it fits without evicting, the most free memory (models spread
            # and later loads evict less); else where evicting idle models frees most.
            fits_now = r.free_bytes >= estimate_bytes
            room = r.free_bytes if fits_now else r.free_bytes + r.evictable_bytes()
            return (fits_now, room, -r.in_flight, r.address)

        return max(candidates, key=score)

    # -- the router's books around each forwarded request -----------------------

    def started(self, replica: PoolReplica, model: str) -> None:
        replica.in_flight += 1
        pooled = replica.models.get(model)
        if pooled is None:
            # Sent for loading: counted as loading until the replica reports.
            pooled = replica.models[model] = PooledModel(LOADING, 0)
        pooled.in_flight += 1

    def finished(self, replica: PoolReplica, model: str) -> None:
        replica.in_flight = max(0, replica.in_flight - 1)
        pooled = replica.models.get(model)
        if pooled is not None:
            pooled.in_flight = max(0, pooled.in_flight - 1)


def _state(replica: PoolReplica, model: str, version: int = 0) -> str | None:
    pooled = replica.models.get(model)
    return None if pooled is None or not pooled.serves(version) else pooled.state
