"""The sequence batcher on its own: Python functions stand in for stateful models."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from google.protobuf import text_format
from modelport.artifacts.sequences import SequenceSpec, read_sequence_spec
from modelport.errors import InvalidInput
from modelport.inference.sequence_batcher import SequenceBatcher
from modelport.inference.stats import VersionStats
from modelport.proto.inference import model_config_pb2 as mc

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

Arrays = dict[str, np.ndarray]

ACCUMULATOR = """
max_batch_size: {mbs}
input [{{ name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] }}]
output [{{ name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }}]
sequence_batching {{
  max_sequence_idle_microseconds: {idle_us}
  {strategy}
  control_input [
    {{ name: "START" control [{{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }}] }},
    {{ name: "READY" control [{{ kind: CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] }}] }},
    {{ name: "END" control [{{ kind: CONTROL_SEQUENCE_END fp32_false_true: [ 0, 1 ] }}] }},
    {{ name: "CORRID" control [{{ kind: CONTROL_SEQUENCE_CORRID data_type: {corrid_type} }}] }}
  ]
  state [{{
    input_name: "ACC_IN" output_name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ]
    initial_state {{ data_type: TYPE_INT32 dims: [ 1 ] zero_data: true name: "zero" }}
  }}]
}}
"""


def spec_of(
    mbs: int = 4,
    strategy: str = "direct { }",
    idle_us: int = 5_000_000,
    corrid_type: str = "TYPE_UINT64",
) -> SequenceSpec:
    text = ACCUMULATOR.format(mbs=mbs, strategy=strategy, idle_us=idle_us, corrid_type=corrid_type)
    config = text_format.Parse(text, mc.ModelConfig())
    return read_sequence_spec("acc", config)


class Accumulator:
    """ACC_OUT = ACC_IN + INPUT; OUTPUT = that sum (+ CORRID on the END request).

    Records every batch's READY and START columns."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.batches: list[tuple[list[bool], list[int]]] = []
        self.delay, self.gate = delay, gate

    def __call__(self, a: Arrays) -> Arrays:
        if self.gate is not None:
            self.gate.wait(5)
        time.sleep(self.delay)
        self.batches.append((a["READY"].reshape(-1).tolist(), a["START"].reshape(-1).tolist()))
        total = a["ACC_IN"] + a["INPUT"]
        corrid = a["CORRID"]
        bonus = np.array([int(c) for c in corrid.reshape(-1)], np.int64).reshape(corrid.shape)
        output = total + (a["END"] > 0) * bonus
        return {"OUTPUT": output.astype(np.int32), "ACC_OUT": total}


def batcher(
    run: Accumulator, spec: SequenceSpec, mbs: int = 4, instances: int = 1
) -> SequenceBatcher:
    b = SequenceBatcher(
        "acc", "model 'acc' version 1", run, spec,
        max_batch_size=mbs, instances=instances, stats=VersionStats("acc", 1),
    )  # fmt: skip
    b.start()
    return b


async def run_sequence(
    b: SequenceBatcher, corrid: int | str, values: list[int], batched: bool = True
) -> list[int]:
    out = []
    for i, v in enumerate(values):
        x = np.array([[v]] if batched else [v], np.int32)
        result = await b.submit(corrid, i == 0, i == len(values) - 1, {"INPUT": x}, None)
        out.append(int(result["OUTPUT"].reshape(-1)[0]))
    return out


def expected(corrid: int, values: list[int]) -> list[int]:
    sums = list(np.cumsum(values))
    sums[-1] += corrid
    return [int(s) for s in sums]


async def test_interleaved_sequences_keep_their_own_state() -> None:
    model = Accumulator(delay=0.002)
    b = batcher(model, spec_of())
    seqs = {101: [1, 2, 3, 4], 202: [10, 20, 30], 303: [5, 5, 5, 5, 5]}
    results = await asyncio.gather(*(run_sequence(b, c, v) for c, v in seqs.items()))
    for (corrid, values), got in zip(seqs.items(), results, strict=True):
        assert got == expected(corrid, values)
    # direct: several sequences ran in one execution, each in its own slot
    assert any(sum(ready) > 1 for ready, _ in model.batches)
    assert b.active_sequences == 0
    await b.close()


async def test_direct_pads_idle_slots_with_ready_false() -> None:
    gate = threading.Event()
    model = Accumulator(gate=gate)
    b = batcher(model, spec_of())
    first = asyncio.create_task(
        b.submit(1, True, False, {"INPUT": np.array([[1]], np.int32)}, None)
    )
    second = asyncio.create_task(
        b.submit(2, True, False, {"INPUT": np.array([[2]], np.int32)}, None)
    )
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(first, second)
    await b.submit(2, False, True, {"INPUT": np.array([[1]], np.int32)}, None)
    # sequence 1 holds slot 0 and sends nothing: slot 0 is padding, READY false
    assert model.batches[-1] == ([False, True], [0, 0])
    await b.submit(1, False, True, {"INPUT": np.array([[1]], np.int32)}, None)
    await b.close()


async def test_string_correlation_ids_and_a_string_corrid_control() -> None:
    b = batcher(Accumulator(), spec_of(corrid_type="TYPE_STRING"))
    assert await run_sequence(b, "1002", [20, -11, -7]) == [20, 9, 2 + 1002]
    await b.close()
    numeric = batcher(Accumulator(), spec_of())
    with pytest.raises(InvalidInput, match="is a string"):
        await numeric.submit("abc", True, False, {"INPUT": np.array([[1]], np.int32)}, None)
    await numeric.close()


async def test_requests_triton_refuses() -> None:
    b = batcher(Accumulator(), spec_of())
    one = {"INPUT": np.array([[1]], np.int32)}
    with pytest.raises(InvalidInput, match="must specify a non-zero or non-empty correlation ID"):
        await b.submit(0, True, False, one, None)
    with pytest.raises(
        InvalidInput,
        match="inference request for sequence 7 to model 'acc' must specify the START flag",
    ):
        await b.submit(7, False, False, one, None)
    with pytest.raises(InvalidInput, match="must specify batch-size 1"):
        await b.submit(7, True, False, {"INPUT": np.zeros((2, 1), np.int32)}, None)
    await b.close()


async def test_sequences_beyond_the_slots_wait_in_the_backlog() -> None:
    model = Accumulator(delay=0.002)
    b = batcher(model, spec_of(mbs=1), mbs=1)  # one slot
    results = await asyncio.gather(run_sequence(b, 1, [1, 1, 1]), run_sequence(b, 2, [2, 2]))
    assert results == [expected(1, [1, 1, 1]), expected(2, [2, 2])]
    assert all(len(ready) == 1 for ready, _ in model.batches)
    await b.close()


async def test_idle_sequences_are_reclaimed_and_free_their_slot() -> None:
    b = batcher(Accumulator(), spec_of(mbs=1, idle_us=50_000), mbs=1)
    one = {"INPUT": np.array([[1]], np.int32)}
    await b.submit(5, True, False, one, None)
    assert b.active_sequences == 1
    # A second sequence waits for the slot, which the idle one gives up.
    waiting = asyncio.create_task(run_sequence(b, 6, [3, 4]))
    assert await asyncio.wait_for(waiting, 2) == expected(6, [3, 4])
    with pytest.raises(InvalidInput, match="must specify the START flag"):
        await b.submit(5, False, True, one, None)
    await b.close()


async def test_oldest_batches_one_request_per_sequence() -> None:
    model = Accumulator(delay=0.003)
    spec = spec_of(mbs=2, strategy="oldest { max_candidate_sequences: 4 }")
    b = batcher(model, spec, mbs=2)
    seqs = {c: [c, c + 1, c + 2] for c in (11, 22, 33, 44)}
    results = await asyncio.gather(*(run_sequence(b, c, v) for c, v in seqs.items()))
    for (corrid, values), got in zip(seqs.items(), results, strict=True):
        assert got == expected(corrid, values)
    assert max(len(ready) for ready, _ in model.batches) == 2
    assert all(all(ready) for ready, _ in model.batches)  # oldest never pads
    await b.close()


async def test_unbatched_model_gets_unbatched_tensors() -> None:
    seen: list[dict[str, tuple[int, ...]]] = []

    def run(a: Arrays) -> Arrays:
        seen.append({k: v.shape for k, v in a.items()})
        return Accumulator()(a)

    b = SequenceBatcher(
        "acc", "acc", run, spec_of(mbs=0), max_batch_size=0, instances=2,  # type: ignore[arg-type]
        stats=VersionStats("acc", 1),
    )  # fmt: skip
    b.start()
    got = await asyncio.gather(
        run_sequence(b, 1, [1, 2], batched=False), run_sequence(b, 2, [3], batched=False)
    )
    assert got == [expected(1, [1, 2]), expected(2, [3])]
    assert seen[0] == {"INPUT": (1,), "ACC_IN": (1,), "START": (1,), "READY": (1,),
                       "END": (1,), "CORRID": (1,)}  # fmt: skip
    await b.close()


def test_spec_validation(tmp_path: object) -> None:
    bad = {
        "control in input": ACCUMULATOR.replace(
            'input [{{ name: "INPUT"',
            'input [{{ name: "START" data_type: TYPE_INT32 dims: [1] }}, {{ name: "INPUT"',
        ),
        "two START": ACCUMULATOR.replace(
            '{{ name: "READY" control [{{ kind: CONTROL_SEQUENCE_READY',
            '{{ name: "S2" control [{{ kind: CONTROL_SEQUENCE_START',
        ),
        "no values": ACCUMULATOR.replace("int32_false_true: [ 0, 1 ]", ""),
        "growable": ACCUMULATOR.replace(
            "dims: [ 1 ]\n    initial", "dims: [ 1 ] use_growable_memory: true\n    initial"
        ),
    }
    messages = {
        "control in input": "'START' is filled by the server",
        "two START": "more than one START control",
        "no values": "needs exactly one of int32_false_true",
        "growable": "use_growable_memory is a GPU memory optimisation",
    }
    for case, text in bad.items():
        config = text_format.Parse(
            text.format(mbs=2, strategy="", idle_us=0, corrid_type="TYPE_UINT64"), mc.ModelConfig()
        )
        with pytest.raises(InvalidInput, match=messages[case]):
            read_sequence_spec("acc", config)


def test_initial_state_from_a_data_file(tmp_path: object) -> None:
    from pathlib import Path

    model_dir = Path(str(tmp_path))
    (model_dir / "initial_state").mkdir()
    (model_dir / "initial_state" / "start.bin").write_bytes(np.array([5, 6], "<i4").tobytes())
    text = """
    max_batch_size: 1
    sequence_batching { state [{ input_name: "S" output_name: "S_OUT" data_type: TYPE_INT32
      dims: [ -1 ] initial_state { data_type: TYPE_INT32 dims: [ 2 ] data_file: "start.bin" } }] }
    """
    spec = read_sequence_spec("m", text_format.Parse(text, mc.ModelConfig()), model_dir)
    assert spec.strategy == "direct" and spec.max_idle_s == 1.0
    assert spec.states[0].initial.tolist() == [5, 6]
    escape = text.replace("start.bin", "../../etc/passwd")
    with pytest.raises(InvalidInput, match="is not a file in"):
        read_sequence_spec("m", text_format.Parse(escape, mc.ModelConfig()), model_dir)
