"""Pool placement, without network: warm first, by free memory otherwise, hot models spread."""

from __future__ import annotations

import pytest
from modelport.errors import FailedPrecondition, NotFound
from modelport.router.placement import LOADING, READY, PooledModel, PoolPlacer, PoolReplica

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

MB = 1 << 20


def replica(address: str, budget_mb: int, **models: tuple[str, int]) -> PoolReplica:
    return PoolReplica(
        address,
        budget_mb * MB,
        {name: PooledModel(state, size * MB) for name, (state, size) in models.items()},
    )


def placer(*replicas: PoolReplica, spread: int = 4) -> PoolPlacer:
    p = PoolPlacer(spread_in_flight=spread)
    for r in replicas:
        p.update(r)
    return p


def test_prefers_the_replica_where_the_model_is_warm() -> None:
    p = placer(
        replica("a:1", 1000),  # empty, most free memory
        replica("b:1", 1000, mlp=(READY, 100), big=(READY, 800)),
    )
    chosen = p.place("mlp", 100 * MB)
    assert (chosen.replica.address, chosen.hit, chosen.also_load) == ("b:1", True, None)
    assert p.stats.hits["mlp"] == 1


def test_a_miss_goes_where_it_fits_without_evicting_then_most_evictable() -> None:
    p = placer(
        replica("a:1", 1000, x=(READY, 900)),  # 100 free
        replica("b:1", 1000, y=(READY, 700)),  # 300 free
        replica("c:1", 500, z=(READY, 200)),  # 300 free, smaller budget
    )
    chosen = p.place("new", 250 * MB)
    assert chosen.replica.address in {"b:1", "c:1"} and not chosen.hit
    assert p.stats.misses["new"] == 1
    # Nothing fits as it is: the replica with the most idle bytes to evict wins.
    p = placer(
        replica("a:1", 1000, x=(READY, 900)),
        replica("b:1", 1000, y=(READY, 950)),
    )
    p.started(p.replicas["b:1"], "y")  # y is busy on b: not evictable
    assert p.place("new", 500 * MB).replica.address == "a:1"


def test_concurrent_first_requests_join_the_replica_already_loading() -> None:
    p = placer(replica("a:1", 1000), replica("b:1", 1000))
    first = p.place("mlp", 100 * MB)
    p.started(first.replica, "mlp")  # forwarded: the replica is loading it now
    assert first.replica.models["mlp"].state == LOADING
    for _ in range(5):
        again = p.place("mlp", 100 * MB)
        assert again.replica is first.replica and not again.hit
    assert p.stats.misses["mlp"] == 1 and p.stats.joins["mlp"] == 5


def test_hot_model_spreads_to_a_second_replica_with_room() -> None:
    p = placer(
        replica("a:1", 1000, hot=(READY, 100)),
        replica("b:1", 1000),
        replica("c:1", 1000, other=(READY, 950)),
        spread=3,
    )
    a = p.replicas["a:1"]
    for _ in range(3):
        p.started(a, "hot")
    chosen = p.place("hot", 100 * MB)
    assert chosen.replica is a, "the request itself goes to the warm copy"
    assert chosen.also_load is not None and chosen.also_load.address == "b:1"
    assert p.stats.spreads["hot"] == 1
    # Once b reports it ready, requests balance over both warm copies.
    p.update(replica("b:1", 1000, hot=(READY, 100)))
    assert p.place("hot", 100 * MB).replica.address == "b:1"
    assert p.where("hot") == {"a:1": READY, "b:1": READY}


def test_spreading_never_evicts_and_respects_max_copies() -> None:
    p = placer(
        replica("a:1", 1000, hot=(READY, 100)),
        replica("b:1", 1000, other=(READY, 950)),
        spread=1,
    )
    p.started(p.replicas["a:1"], "hot")
    assert p.place("hot", 100 * MB).also_load is None
    q = placer(replica("a:1", 1000, hot=(READY, 100)), replica("b:1", 1000), spread=1)
    q.max_copies = 1
    q.started(q.replicas["a:1"], "hot")
    assert q.place("hot", 100 * MB).also_load is None


def test_reports_keep_the_routers_in_flight_books() -> None:
    p = placer(replica("a:1", 1000, m=(READY, 10)))
    p.started(p.replicas["a:1"], "m")
    p.update(replica("a:1", 1000, m=(READY, 12)))
    assert p.replicas["a:1"].models["m"].in_flight == 1
    p.finished(p.replicas["a:1"], "m")
    assert p.replicas["a:1"].models["m"].in_flight == 0
    assert p.replicas["a:1"].used_bytes == 12 * MB


def test_refusals_name_the_model() -> None:
    with pytest.raises(NotFound, match="no pool replica"):
        PoolPlacer().place("m", 1)
    p = placer(replica("a:1", 100))
    with pytest.raises(FailedPrecondition, match=r"model 'huge' needs about .* largest pool"):
        p.place("huge", 200 * MB)
