"""Fields a Triton config may set that modelport does not act on are refused by name."""

from __future__ import annotations

import re

import pytest
from google.protobuf import text_format
from modelport.artifacts.config_fields import refuse_unused_fields
from modelport.errors import InvalidInput
from modelport.proto.inference import model_config_pb2 as mc

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

BASE = """
name: "m" platform: "pytorch_libtorch" max_batch_size: 8
input [{ name: "IN" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 4 ] reshape { shape: [ 12 ] } }]
output [{ name: "OUT" data_type: TYPE_FP32 dims: [ 10 ] label_filename: "labels.txt" }]
instance_group [{ name: "g" kind: KIND_CPU count: 2 }]
version_policy { all {} }
"""


def parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


@pytest.mark.parametrize(
    "extra",
    [
        "",
        "dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 100"
        " default_queue_policy { max_queue_size: 10 } }",
        "dynamic_batching { }",
        'sequence_batching { oldest { max_candidate_sequences: 4 } state [{ input_name: "S" output_name: "T" }] }',
        "model_transaction_policy { decoupled: true }",
        "response_cache { enable: false }",  # present, sets nothing
        "optimization { }",
        'parameters { key: "INTRA_OP_THREAD_COUNT" value { string_value: "1" } }',
    ],
)
def test_what_modelport_acts_on_loads(extra: str) -> None:
    refuse_unused_fields("m", parse(BASE + extra))


@pytest.mark.parametrize(
    ("extra", "path", "hint"),
    [
        ("response_cache { enable: true }", "response_cache.enable", "not cached"),
        ("optimization { cuda { graphs: true } }", "optimization.cuda.graphs", "--torch-threads"),
        (
            'parameters { key: "NUM_THREADS" value { string_value: "4" } }',
            "parameters['NUM_THREADS']",
            "takes no model parameters",
        ),
        (
            "dynamic_batching { priority_levels: 2 }",
            "dynamic_batching.priority_levels",
            "priorities",
        ),
        (
            "dynamic_batching { default_queue_policy { timeout_action: DELAY } }",
            "dynamic_batching.default_queue_policy.timeout_action",
            "REJECT",
        ),
        ('model_warmup [{ name: "w" batch_size: 1 }]', "model_warmup.name", "warmed up at load"),
        (
            "instance_group [{ count: 1 rate_limiter { priority: 1 } }]",
            "instance_group.rate_limiter.priority",
            "max_queue_size",
        ),
        (
            'model_operations { op_library_filename: [ "libcustom.so" ] }',
            "model_operations.op_library_filename",
            "not loaded",
        ),
        (
            'batch_input [{ kind: BATCH_ELEMENT_COUNT target_name: [ "X" ] }]',
            "batch_input.target_name",
            "ragged",
        ),
        ('runtime: "model.py"', "runtime", "runs torch models itself"),
    ],
)
def test_fields_not_acted_on_are_refused_by_name(extra: str, path: str, hint: str) -> None:
    with pytest.raises(
        InvalidInput, match=f"config: {re.escape(path)} is not supported by modelport"
    ) as err:
        refuse_unused_fields("m", parse(BASE + extra))
    assert hint in str(err.value)
