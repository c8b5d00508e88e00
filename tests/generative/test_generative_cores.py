"""Transport-free pieces of generative serving: load reports, the stream pick, the config,
the engine overrides the service's flags make, the router's reading of streamed answers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from modelport.artifacts.config import build_spec, infer_platform, parse_config_text
from modelport.artifacts.generative import GenerativeLimits, config_pbtxt
from modelport.common.generative_load import GenerativeLoad, from_metadata, to_metadata
from modelport.errors import FailedPrecondition, InvalidInput, QueueFull
from modelport.inference.generative.loading import (
    EngineOverrides,
    kv_cache_bytes,
    load_generative,
)
from modelport.inference.settings import InferenceSettings
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.router.balancer import Balancer
from modelport.router.load_board import LoadBoard
from modelport.router.openai.router_backend import read_delta, stream_request
from modelport.router.replicas import Endpoint, ReplicaTable

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


def test_load_reports_round_trip_and_garbage_is_dropped() -> None:
    load = GenerativeLoad("tiny", "1", running=3, waiting=2, kv_usage=0.25)
    assert from_metadata(to_metadata([load])) == [load]
    assert from_metadata([("modelport-generative-load", "model=x;running=oops")]) == []
    assert from_metadata([("other", "model=x")]) == []


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def table_of(*addresses: str) -> ReplicaTable:
    table = ReplicaTable()
    table.apply([Endpoint("tiny", a) for a in addresses])
    for replica in table.replicas.values():
        table.set_versions(replica, {"tiny": frozenset({"1"})})
    return table


def test_streams_go_to_the_replica_least_loaded_by_its_reports() -> None:
    clock = Clock()
    table = table_of("a:1", "b:1")
    board = LoadBoard(clock=clock, rng=random.Random(0))
    balancer = Balancer(table, loads=board)
    a, b = table.replicas["a:1"], table.replicas["b:1"]
    # Another router's streams fill `a`: this router has none open on either.
    board.report("a:1", [GenerativeLoad("tiny", "1", running=4, waiting=2, kv_usage=0.3)])
    board.report("b:1", [GenerativeLoad("tiny", "1", running=1, waiting=0, kv_usage=0.1)])
    assert {balancer.pick_stream("tiny", "").address for _ in range(20)} == {"b:1"}
    # Streams this router opened count even when a report predates them.
    b.in_flight = 7
    assert balancer.pick_stream("tiny", "") is a
    # A nearly full KV pool weighs on top of the sequences.
    b.in_flight = 0
    board.report("b:1", [GenerativeLoad("tiny", "1", running=1, waiting=0, kv_usage=0.95)])
    assert balancer.pick_stream("tiny", "") is a
    # Reports go stale; then only this router's own counts speak.
    clock.now += 60
    a.in_flight, b.in_flight = 1, 0
    assert balancer.pick_stream("tiny", "") is b
    # A model nobody reported on is balanced as before (power of two choices).
    assert not board.knows("other")


def spec_of(text: str):  # type: ignore[no-untyped-def]
    config = parse_config_text(text)
    config.platform = infer_platform(config, None)  # as the model manager completes it
    return build_spec("tiny", config)


def test_generative_config_is_validated_into_a_spec() -> None:
    spec = spec_of(config_pbtxt("tiny", GenerativeLimits()))
    assert spec.platform == "generative" and spec.decoupled
    assert spec.generative == GenerativeLimits()
    not_decoupled = config_pbtxt("tiny").replace("decoupled: true", "decoupled: false")
    with pytest.raises(InvalidInput, match="decoupled"):
        spec_of(not_decoupled)
    with pytest.raises(InvalidInput, match="block_size"):
        bad = config_pbtxt("tiny").replace('"block_size" value { string_value: "16"',
                                           '"block_size" value { string_value: "0"')  # fmt: skip
        spec_of(bad)


def test_the_services_flags_override_the_configs_limits() -> None:
    settings = InferenceSettings(
        generative_engine="continuous", kv_memory_fraction=0.05, tensor_parallel_size=2,
        max_num_seqs=300,
    )  # fmt: skip
    limits = settings.engine_overrides(torch_threads=1).apply(GenerativeLimits(), "tiny")
    assert (limits.kv_memory_fraction, limits.tensor_parallel_size) == (0.05, 2)
    assert limits.max_num_seqs == limits.max_num_batched_tokens == 300
    assert EngineOverrides().apply(GenerativeLimits(kv_cache_mb=7), "tiny").kv_cache_mb == 7
    # A fraction of the RAM available now, on CPU.
    assert 0 < kv_cache_bytes(limits, "cpu") < 1 << 40
    assert kv_cache_bytes(GenerativeLimits(kv_cache_mb=3), "cpu") == 3 << 20
    with pytest.raises(InvalidInput, match="kv-memory-fraction"):
        InferenceSettings(kv_memory_fraction=1.5)
    with pytest.raises(InvalidInput, match="engine"):
        EngineOverrides(engine="tgi").apply(GenerativeLimits(), "tiny")


def test_engines_that_cannot_run_are_refused_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_of(config_pbtxt("tiny"))
    monkeypatch.setenv("MODELPORT_VLLM_PYTHON", str(tmp_path / "no-such-python"))
    with pytest.raises(FailedPrecondition, match=r"model 'tiny': engine 'vllm' needs .*make vllm"):
        load_generative(spec, 1, tmp_path, EngineOverrides(engine="vllm"))
    with pytest.raises(InvalidInput, match="needs engine 'vllm'"):
        load_generative(spec, 1, tmp_path, EngineOverrides(tensor_parallel_size=2))


def test_the_router_builds_requests_and_reads_answers_with_their_codes() -> None:
    request = pb.ModelInferRequest.FromString(
        stream_request("tiny", "Hello", {"max_tokens": 3, "temperature": 0})
    )
    names = [t.name for t in request.inputs]
    assert names == ["text_input", "stream", "sampling_parameters"]
    assert json.loads(request.raw_input_contents[2][4:]) == {"max_tokens": 3, "temperature": 0}
    ids = pb.ModelInferRequest.FromString(stream_request("tiny", [5, 6], {}))
    assert ids.inputs[0].name == "input_ids" and ids.inputs[0].shape == [2]

    refused = pb.ModelStreamInferResponse(error_message="model 'tiny': queue full")
    refused.infer_response.parameters["error_code"].string_param = "RESOURCE_EXHAUSTED"
    with pytest.raises(QueueFull, match="queue full"):
        read_delta(refused.SerializeToString())
