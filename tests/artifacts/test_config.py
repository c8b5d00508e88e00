"""Config parsing, validation, version policy and autocompletion (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from modelport.artifacts import repository
from modelport.artifacts.config import (
    AUTO_MAX_BATCH,
    build_spec,
    check_exported_batch,
    complete_from_program,
    parse_config_text,
)
from modelport.errors import InvalidInput
from modelport.inference.samples import MLP_CONFIG, SIMPLE_CONFIG
from modelport.proto.inference import model_config_pb2 as mc

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


def test_sample_configs_parse_into_specs() -> None:
    spec = build_spec("mlp", parse_config_text(MLP_CONFIG))
    assert spec.platform == "torch_export"
    assert [t.name for t in spec.inputs] == ["INPUT"]
    assert spec.inputs[0].dims == (256,) and spec.inputs[0].datatype.name == "FP32"
    assert spec.batching.enabled and spec.batching.max_delay_s == pytest.approx(0.0002)
    assert spec.batching.max_queue_size == 2048
    simple = build_spec("simple", parse_config_text(SIMPLE_CONFIG))
    assert simple.max_batch_size == 8 and simple.output_index == {"OUTPUT0": 0, "OUTPUT1": 1}


def test_triton_fields_we_do_not_act_on_still_parse() -> None:
    text = (
        SIMPLE_CONFIG
        + """
    optimization { input_pinned_memory { enable: true } }
    parameters { key: "k" value { string_value: "v" } }
    model_warmup [ { name: "w" batch_size: 1 inputs { key: "INPUT0" value {
        data_type: TYPE_INT32 dims: [ 16 ] zero_data: true } } } ]
    version_policy { latest { num_versions: 2 } }
    """
    )
    config = parse_config_text(text)
    assert config.parameters["k"].string_value == "v"
    assert config.version_policy.latest.num_versions == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('platform: "onnxruntime_onnx"', "platform 'onnxruntime_onnx' is not served"),
        ('platform: "torch_export" input [{name: "a" data_type: TYPE_FP32 dims: [1]}]',
         "no outputs declared"),
        ('platform: "torch_export" max_batch_size: 0 dynamic_batching {} '
         'input [{name: "a" data_type: TYPE_FP32 dims: [1]}] '
         'output [{name: "b" data_type: TYPE_FP32 dims: [1]}]', "dynamic_batching needs"),
        ('platform: "torch_export" input [{name: "a" data_type: TYPE_FP32 dims: [0]}] '
         'output [{name: "b" data_type: TYPE_FP32 dims: [1]}]', "dims [0] must be > 0 or -1"),
        ('platform: "torch_export" input [{name: "a" data_type: TYPE_FP32 dims: [1]}, '
         '{name: "a" data_type: TYPE_FP32 dims: [1]}] '
         'output [{name: "b" data_type: TYPE_FP32 dims: [1]}]', "duplicate input name(s) ['a']"),
        ('name: "other" platform: "torch_export"', "does not match its folder"),
        ('platform: "torch_export" max_batch_size: -5 '
         'input [{name: "a" data_type: TYPE_FP32 dims: [1]}] '
         'output [{name: "b" data_type: TYPE_FP32 dims: [1]}]', "max_batch_size -5 must be >= 0"),
        ('platform: "torch_export" input [{name: "a" data_type: TYPE_FP32 '
         'dims: [9223372036854775807]}] output [{name: "b" data_type: TYPE_FP32 dims: [1]}]',
         "more than the 1024 MiB one tensor of a batch may take"),
    ],
)  # fmt: skip
def test_invalid_configs_name_the_field(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=None) as info:
        build_spec("m", parse_config_text(text))
    assert message in str(info.value)


def test_syntax_error_names_the_file() -> None:
    with pytest.raises(InvalidInput, match=r"config\.pbtxt"):
        parse_config_text("max_batch_size: 'eight'")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", [3]),
        ("latest { num_versions: 2 }", [2, 3]),
        ("all {}", [1, 2, 3]),
        ("specific { versions: [1, 3] }", [1, 3]),
    ],
)
def test_version_policy(policy: str, expected: list[int]) -> None:
    config = parse_config_text(f"version_policy {{ {policy} }}" if policy else "")
    assert repository.select_versions("m", [1, 2, 3], config.version_policy) == expected


def test_version_policy_naming_a_missing_version_fails() -> None:
    config = parse_config_text("version_policy { specific { versions: [4] } }")
    with pytest.raises(InvalidInput, match=r"missing versions \[4\]"):
        repository.select_versions("m", [1, 2], config.version_policy)


def test_autocomplete_from_exported_program(tmp_path: Path) -> None:
    class TwoHeads(torch.nn.Module):
        def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return features.sum(dim=1), mask.to(torch.int64)

    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        TwoHeads(),
        (torch.zeros(2, 8), torch.zeros(2, 3, dtype=torch.bool)),
        dynamic_shapes=({0: batch}, {0: batch}),
    )
    config = mc.ModelConfig()
    complete_from_program(config, program)
    spec = build_spec("two", config)
    assert spec.max_batch_size == AUTO_MAX_BATCH and spec.batching.enabled
    assert [(t.name, t.datatype.name, t.dims) for t in spec.inputs] == [
        ("features", "FP32", (8,)),
        ("mask", "BOOL", (3,)),
    ]
    assert [(t.name, t.datatype.name, t.dims) for t in spec.outputs] == [
        ("output_0", "FP32", ()),
        ("output_1", "INT64", (3,)),
    ]


def test_the_exported_batch_bound_caps_max_batch_size() -> None:
    """min(the program's Dim max, AUTO_MAX_BATCH) when completed; above it is refused."""
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(
        torch.nn.Linear(4, 2), (torch.zeros(2, 4),), dynamic_shapes=({0: batch},)
    )
    config = mc.ModelConfig()
    complete_from_program(config, program)
    assert config.max_batch_size == 8
    check_exported_batch("m", config, program)  # at the bound: fine
    config.max_batch_size = AUTO_MAX_BATCH
    with pytest.raises(InvalidInput, match=r"max_batch_size 32 is above the batch bound .*\(8,"):
        check_exported_batch("m", config, program)
