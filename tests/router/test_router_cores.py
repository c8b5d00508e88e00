"""Unit tests of the router's transport-free cores: no network."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from modelport.errors import InvalidInput, NotFound, Unavailable
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.router import tensors, wire
from modelport.router.balancer import Balancer
from modelport.router.policies import MemberRef, Planner, RoutingState, TrafficPolicy
from modelport.router.replicas import EjectionRule, Endpoint, ReplicaTable

from tests.router.router_helpers import simple_request

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def table_with(*addresses: str, versions: tuple[str, ...] = ("1",)) -> ReplicaTable:
    table = ReplicaTable()
    table.apply([Endpoint("m", a) for a in addresses])
    for replica in table.replicas.values():
        table.set_versions(replica, {"m": frozenset(versions)})
    return table


def test_power_of_two_prefers_the_less_loaded_replica() -> None:
    table = table_with("a:1", "b:1")
    table.replicas["a:1"].in_flight = 5
    balancer = Balancer(table, random.Random(1))
    picks = Counter(balancer.pick("m", "1").address for _ in range(100))
    assert picks == {"b:1": 100}


def test_least_loaded_keeps_outstanding_load_level() -> None:
    table = table_with("a:1", "b:1", "c:1", "d:1")
    balancer = Balancer(table, random.Random(2))
    held = []
    for _ in range(400):  # every request stays in flight: load must stay level
        replica = balancer.pick("m", "")
        table.started(replica)
        held.append(replica)
    counts = Counter(r.address for r in held)
    assert max(counts.values()) - min(counts.values()) <= 4


def test_version_filter_not_found_and_unavailable() -> None:
    table = table_with("a:1", versions=("1", "2"))
    balancer = Balancer(table)
    assert balancer.pick("m", "2").address == "a:1"
    with pytest.raises(NotFound, match="version '9'"):
        balancer.pick("m", "9")
    with pytest.raises(NotFound, match="Request for unknown model: 'other' is not found"):
        balancer.pick("other", "")
    table.apply([Endpoint("m", "a:1", ready=False)])
    with pytest.raises(Unavailable, match="model 'm'"):
        balancer.pick("m", "1")


def test_terminating_and_unindexed_replicas_get_no_traffic() -> None:
    table = table_with("a:1", "b:1")
    table.apply(
        [Endpoint("m", "a:1", terminating=True), Endpoint("m", "b:1"), Endpoint("m", "c:1")]
    )
    balancer = Balancer(table)
    assert {balancer.pick("m", "1").address for _ in range(20)} == {"b:1"}


def test_repeated_transport_failures_eject_then_recover() -> None:
    clock = FakeClock()
    table = ReplicaTable(clock=clock, ejection=EjectionRule(3, base_seconds=5))
    table.apply([Endpoint("m", "a:1"), Endpoint("m", "b:1")])
    for replica in table.replicas.values():
        table.set_versions(replica, {"m": frozenset({"1"})})
    bad = table.replicas["a:1"]
    ejected = []
    for _ in range(3):
        table.started(bad)
        ejected.append(table.failed(bad, transport=True))
    assert ejected == [False, False, True]
    balancer = Balancer(table)
    assert {balancer.pick("m", "1").address for _ in range(20)} == {"b:1"}
    clock.now += 6
    assert "a:1" in {balancer.pick("m", "1").address for _ in range(50)}
    # An answered error (the backend is alive) never counts toward ejection.
    for _ in range(5):
        table.started(bad)
        assert not table.failed(bad, transport=False)


def test_all_ejected_still_serves() -> None:
    clock = FakeClock()
    table = ReplicaTable(clock=clock, ejection=EjectionRule(1))
    table.apply([Endpoint("m", "a:1")])
    replica = table.replicas["a:1"]
    table.set_versions(replica, {"m": frozenset({"1"})})
    table.started(replica)
    assert table.failed(replica, transport=True)
    assert Balancer(table).pick("m", "1") is replica


def planner_with(policy: TrafficPolicy, aliases: dict[str, str]) -> Planner:
    planner = Planner(random.Random(3))
    planner.update(RoutingState(policies={"m": policy}, aliases={"m": aliases}))
    return planner


def test_split_follows_weights_and_sessions_stick() -> None:
    planner = planner_with(
        TrafficPolicy(split=(("production", 90), ("canary", 10))),
        {"production": "1", "canary": "2"},
    )
    versions = Counter(planner.plan("m", "").targets[0].version for _ in range(4000))
    assert abs(versions["2"] / 4000 - 0.10) < 0.02
    for session in ("alice", "bob", "carol"):
        first = planner.plan("m", "", session).targets[0]
        assert all(planner.plan("m", "", session).targets[0] == first for _ in range(20))


def test_version_references() -> None:
    planner = planner_with(TrafficPolicy(), {"production": "3", "canary": "4"})
    assert planner.plan("m", "").targets[0].version == "3"
    assert planner.plan("m", "7").targets[0].version == "7"
    assert planner.plan("m", "canary").targets[0].version == "4"
    with pytest.raises(NotFound, match="unknown alias 'nope'"):
        planner.plan("m", "nope")
    assert planner.plan("other", "").targets[0].version == ""


def test_an_alias_moves_only_once_a_replica_serves_its_new_version() -> None:
    served = {("m", "1")}
    planner = Planner(served=lambda model, version: (model, version) in served)
    state = RoutingState(aliases={"m": {"production": "1"}})
    planner.update(state)
    assert planner.plan("m", "").targets[0].version == "1"
    planner.update(RoutingState(aliases={"m": {"production": "2"}}))  # the registry moved it
    assert planner.plan("m", "").targets[0].version == "1"  # no replica serves 2 yet
    assert planner.plan("m", "production").targets[0].version == "1"
    assert planner.waiting("m") == {"production": ("2", "1")}
    served.add(("m", "2"))
    planner.replicas_changed()
    assert planner.plan("m", "").targets[0].version == "2" and planner.waiting("m") == {}
    served.discard(("m", "1"))
    planner.update(state)  # a rollback waits the same way
    assert planner.plan("m", "").targets[0].version == "2"


def test_a_rollback_during_the_move_it_undoes_goes_back_to_what_is_served() -> None:
    # production 1 -> 2 while the replica still serves both, then rolled back to 1
    # before the replica's reload to [2] reported: the router routed to 1 (served
    # then), the replica's report then said {2}, and its reload to [1, 2] is still
    # to come. Meanwhile production must route to 2, not to 1 that nothing serves.
    served = {("m", "1"), ("m", "2")}
    planner = Planner(served=lambda model, version: (model, version) in served)
    planner.update(RoutingState(aliases={"m": {"production": "1", "canary": "2"}}))
    assert planner.plan("m", "").targets[0].version == "1"
    planner.update(RoutingState(aliases={"m": {"production": "2", "canary": "2"}}))
    assert planner.plan("m", "").targets[0].version == "2"
    planner.update(RoutingState(aliases={"m": {"production": "1", "canary": "2"}}))
    assert planner.plan("m", "").targets[0].version == "1"  # still served: the table is stale
    served.discard(("m", "1"))  # the reload to [2] lands
    planner.replicas_changed()
    assert planner.plan("m", "").targets[0].version == "2"
    assert planner.waiting("m") == {"production": ("1", "2")}
    served.add(("m", "1"))  # the reload to [1, 2] lands
    planner.replicas_changed()
    assert planner.plan("m", "").targets[0].version == "1" and planner.waiting("m") == {}


def test_a_split_sends_nothing_to_an_alias_no_replica_serves() -> None:
    served = {("m", "1")}
    planner = Planner(served=lambda model, version: (model, version) in served)
    planner.update(
        RoutingState(
            policies={"m": TrafficPolicy(split=(("production", 50), ("canary", 50)))},
            aliases={"m": {"production": "1", "canary": "2"}},
        )
    )
    assert {planner.plan("m", "").targets[0].version for _ in range(200)} == {"1"}
    served.add(("m", "2"))
    planner.replicas_changed()
    assert {planner.plan("m", "").targets[0].version for _ in range(200)} == {"1", "2"}


def test_shadow_ensemble_and_scatter_plans() -> None:
    planner = planner_with(TrafficPolicy(shadow_alias="canary"), {"canary": "2"})
    plan = planner.plan("m", "")
    assert plan.kind == "single" and plan.shadow is not None and plan.shadow.version == "2"
    members = (MemberRef("m", "1"), MemberRef.parse("n@canary"))
    planner.update(
        RoutingState(
            policies={"m": TrafficPolicy(ensemble=members), "s": TrafficPolicy(scatter=True)},
            aliases={"n": {"canary": "5"}},
        )
    )
    plan = planner.plan("m", "")
    assert plan.kind == "ensemble" and [(t.model, t.version) for t in plan.targets] == [
        ("m", "1"),
        ("n", "5"),
    ]
    assert planner.plan("s", "").kind == "scatter"


def test_wire_retarget_and_routing_fields_match_a_full_parse() -> None:
    request = simple_request(version="1")
    data = request.SerializeToString()
    assert wire.routing_fields(data) == ("simple", "1", "req-1")
    edited = wire.retarget(data, model="other", version="")
    parsed = pb.ModelInferRequest.FromString(edited)
    assert (parsed.model_name, parsed.model_version) == ("other", "")
    assert parsed.raw_input_contents == request.raw_input_contents
    assert wire.routing_fields(edited) == ("other", "", "req-1")
    with pytest.raises(ValueError):
        wire.routing_fields(data[:-3])


def test_stream_response_wraps_bytes() -> None:
    answer = pb.ModelInferResponse(model_name="m", id="x").SerializeToString()
    wrapped = pb.ModelStreamInferResponse.FromString(wire.stream_response(answer))
    assert wrapped.infer_response.id == "x" and not wrapped.error_message
    failed = pb.ModelStreamInferResponse.FromString(wire.stream_error("boom", answer))
    assert failed.error_message == "boom"


def test_parameters_read_and_appended_without_decoding() -> None:
    """What the stream relay reads off answers (final flag, error code, outputs) and
    appends to requests (the empty final response asked for)."""
    answer = pb.ModelInferResponse(model_name="m", id="relay-7")
    answer.parameters["triton_final_response"].bool_param = True
    answer.parameters["error_code"].string_param = "UNAVAILABLE"
    answer.outputs.add(name="y", datatype="FP32", shape=[1])
    key, found, outputs = wire.parameters(
        answer.SerializeToString(), "triton_final_response", "error_code", "absent"
    )
    assert (key, outputs, sorted(found)) == (
        "relay-7",
        True,
        ["error_code", "triton_final_response"],
    )
    assert wire.bool_param(found["triton_final_response"]) is True
    assert wire.string_param(found["error_code"]) == "UNAVAILABLE"
    assert wire.bool_param(found.get("absent")) is None
    answer.parameters["triton_final_response"].bool_param = False  # a oneof: sent as 0
    del answer.outputs[:]
    _, found, outputs = wire.parameters(answer.SerializeToString(), "triton_final_response")
    assert wire.bool_param(found["triton_final_response"]) is False and not outputs
    request = simple_request().SerializeToString()
    edited = request + wire.parameter_entry("triton_enable_empty_final_response", wire.BOOL_TRUE)
    parsed = pb.ModelInferRequest.FromString(edited)
    assert parsed.parameters["triton_enable_empty_final_response"].bool_param
    assert parsed.raw_input_contents == pb.ModelInferRequest.FromString(request).raw_input_contents


def test_ensemble_mean_and_its_checks() -> None:
    a = [tensors.Tensor("y", "FP32", np.array([[1.0, 2.0]], np.float32))]
    b = [tensors.Tensor("y", "FP32", np.array([[3.0, 6.0]], np.float32))]
    (mean,) = tensors.ensemble_mean("m", [a, b])
    np.testing.assert_allclose(mean.array, [[2.0, 4.0]])
    assert mean.array.dtype == np.float32
    ints = [tensors.Tensor("y", "INT32", np.zeros(2, np.int32))]
    with pytest.raises(InvalidInput, match="FP16, FP32 or FP64"):
        tensors.ensemble_mean("m", [ints, ints])
    other_shape = [tensors.Tensor("y", "FP32", np.zeros((2, 2), np.float32))]
    with pytest.raises(InvalidInput, match="differs between members"):
        tensors.ensemble_mean("m", [a, other_shape])


def test_scatter_then_gather_keeps_row_order() -> None:
    x = tensors.Tensor("x", "FP32", np.arange(70, dtype=np.float32).reshape(7, 10))
    parts = tensors.scatter("m", [x], 3)
    assert [p[0].array.shape[0] for p in parts] == [2, 2, 3]
    back = tensors.gather("m", [[tensors.Tensor("y", "FP32", p[0].array)] for p in parts])
    np.testing.assert_array_equal(back[0].array, x.array)
    assert len(tensors.scatter("m", [x], 50)) == 7
    with pytest.raises(InvalidInput, match="dim 0"):
        tensors.scatter("m", [x, tensors.Tensor("z", "FP32", np.zeros((3, 1)))], 2)
