"""Every OIP datatype through a real TorchScript model over gRPC, raw and typed."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from modelport.proto.inference import grpc_service_pb2 as pb

# name, numpy dtype of the raw bits, sample values
TYPES = [
    ("BOOL", np.bool_, [True, False, True]),
    ("UINT8", np.uint8, [0, 7, 255]),
    ("UINT16", np.uint16, [0, 7, 65535]),
    ("UINT32", np.uint32, [0, 7, 2**32 - 1]),
    ("UINT64", np.uint64, [0, 7, 2**64 - 1]),
    ("INT8", np.int8, [-128, 0, 127]),
    ("INT16", np.int16, [-32768, 0, 32767]),
    ("INT32", np.int32, [-(2**31), 0, 2**31 - 1]),
    ("INT64", np.int64, [-(2**63), 0, 2**63 - 1]),
    ("FP16", np.float16, [-1.5, 0.0, 65504.0]),
    ("FP32", np.float32, [-1.5, 0.0, 3.0e38]),
    ("FP64", np.float64, [-1.5, 0.0, 1.0e300]),
    ("BF16", np.uint16, [0x3FC0, 0x0000, 0xC040]),  # 1.5, 0, -3.0 as raw bf16 bits
]


TYPED_FIELD = {"BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
               "UINT32": "uint_contents", "UINT64": "uint64_contents", "INT8": "int_contents",
               "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
               "FP32": "fp32_contents", "FP64": "fp64_contents"}  # fmt: skip


def echo_repo(root: Path, names: list[str]) -> Path:
    """A TorchScript model whose every output is its same-typed input (BYTES as List[str])."""
    args = ", ".join(f"i_{n}: torch.Tensor" for n in names)
    outs = ", ".join(f"i_{n}.clone()" for n in names)
    module_file = root / "echo_source.py"
    root.mkdir(parents=True)
    module_file.write_text(  # TorchScript compiles from source files, so write one
        "import torch\n\n\nclass Echo(torch.nn.Module):\n"
        f"    def forward(self, {args}, i_BYTES: list[str]):\n"
        f"        return {outs}, i_BYTES\n"
    )
    spec = importlib.util.spec_from_file_location("echo_source", module_file)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    version = root / "echo" / "1"
    version.mkdir(parents=True)
    torch.jit.script(module.Echo()).save(str(version / "model.pt"))
    tensors = [*names, "BYTES"]
    config_type = {n: ("TYPE_STRING" if n == "BYTES" else f"TYPE_{n}") for n in tensors}
    inputs = ", ".join(
        f'{{ name: "i_{n}" data_type: {config_type[n]} dims: [ 3 ] }}' for n in tensors
    )
    outputs = ", ".join(
        f'{{ name: "o_{n}" data_type: {config_type[n]} dims: [ 3 ] }}' for n in tensors
    )
    (root / "echo" / "config.pbtxt").write_text(
        f'platform: "pytorch_libtorch" max_batch_size: 0 input [ {inputs} ] output [ {outputs} ]'
    )
    return root


def bytes_raw(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


@pytest.mark.parametrize("typed", [False, True], ids=["raw", "typed"])
async def test_every_datatype_round_trips(
    tmp_path: Path, inference_server, stub_for, typed: bool
) -> None:
    # FP16 and BF16 have no typed field: they travel raw only, so the typed case leaves them out.
    types = [t for t in TYPES if not typed or t[0] in TYPED_FIELD]
    repo = echo_repo(tmp_path / "models", [name for name, _, _ in types])
    stub = stub_for((await inference_server(repo)).address)
    request = pb.ModelInferRequest(model_name="echo")
    words = [b"alpha", b"", b"\xce\xbb"]
    for name, dtype, values in types:
        tensor = request.inputs.add(name=f"i_{name}", datatype=name, shape=[3])
        if typed:
            getattr(tensor.contents, TYPED_FIELD[name]).extend(values)
        else:
            request.raw_input_contents.append(np.array(values, dtype=dtype).tobytes())
    tensor = request.inputs.add(name="i_BYTES", datatype="BYTES", shape=[3])
    if typed:
        tensor.contents.bytes_contents.extend(words)
    else:
        request.raw_input_contents.append(bytes_raw(words))
    response = await stub.ModelInfer(request)
    outputs = {o.name: (o, response.raw_output_contents[i]) for i, o in enumerate(response.outputs)}
    for name, dtype, values in types:
        meta, raw = outputs[f"o_{name}"]
        assert meta.datatype == name and list(meta.shape) == [3]
        np.testing.assert_array_equal(
            np.frombuffer(raw, dtype=dtype), np.array(values, dtype=dtype)
        )
    meta, raw = outputs["o_BYTES"]
    assert meta.datatype == "BYTES" and raw == bytes_raw(words)
