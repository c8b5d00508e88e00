"""Building load-test requests from metadata, .npy files and perf_analyzer-style JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from modelport.client.codec import decode_raw
from modelport.loadtest import inputs
from modelport.proto.inference import grpc_service_pb2 as pb

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


def metadata() -> pb.ModelMetadataResponse:
    response = pb.ModelMetadataResponse(name="m")
    response.inputs.add(name="X", datatype="FP32", shape=[-1, 4])
    response.inputs.add(name="IDS", datatype="INT64", shape=[-1, 3])
    response.inputs.add(name="TEXT", datatype="BYTES", shape=[2])
    response.inputs.add(name="HALF", datatype="BF16", shape=[2])
    return response


def decoded(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    return {
        t.name: decode_raw(request.raw_input_contents[i], t.datatype, t.shape)
        for i, t in enumerate(request.inputs)
    }


def test_random_inputs_fill_variable_dims_and_look_like_data() -> None:
    requests = inputs.random_requests(metadata(), version="2", shapes={"X": [8, 4]})
    assert len(requests) == inputs.RANDOM_VARIANTS
    first = requests[0]
    assert first.model_name == "m" and first.model_version == "2"
    assert [list(t.shape) for t in first.inputs] == [[8, 4], [1, 3], [2], [2]]
    arrays = decoded(first)
    assert np.isfinite(arrays["X"]).all() and abs(arrays["X"]).max() < 10
    assert arrays["IDS"].min() >= 0 and arrays["IDS"].max() < 100
    assert all(v.startswith(b"sample-") for v in arrays["TEXT"])
    assert np.isfinite(arrays["HALF"]).all()
    # Variants differ, so a response cache cannot answer them all.
    assert requests[0].raw_input_contents[0] != requests[1].raw_input_contents[0]


def test_shape_overrides_must_fit_the_model() -> None:
    assert inputs.parse_shapes(["X:2,4", "IDS:1,3"]) == {"X": [2, 4], "IDS": [1, 3]}
    with pytest.raises(inputs.InputError, match="NAME:D1"):
        inputs.parse_shapes(["X=2"])
    with pytest.raises(inputs.InputError, match="does not fit"):
        inputs.random_requests(metadata(), shapes={"X": [2, 5]})
    with pytest.raises(inputs.InputError, match="unknown inputs"):
        inputs.random_requests(metadata(), shapes={"Y": [1]})


def test_perf_analyzer_json_flat_and_shaped_entries(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(
        json.dumps(
            {
                "data": [
                    {"X": [1, 2, 3, 4], "TEXT": ["a", "b"]},
                    {"X": {"content": list(range(8)), "shape": [2, 4]}, "TEXT": ["c", "d"]},
                ]
            }
        )
    )
    first, second = inputs.json_requests(path, "m", metadata=metadata())
    x1, x2 = decoded(first)["X"], decoded(second)["X"]
    assert x1.shape == (1, 4) and x1.dtype == np.float32  # flat data takes the model's shape
    assert x2.shape == (2, 4) and x2[1, 3] == 7
    assert decoded(second)["TEXT"].tolist() == [b"c", b"d"]
    path.write_text(json.dumps({"data": [{"X": [1, 2, 3]}]}))
    with pytest.raises(inputs.InputError, match="3 values"):
        inputs.json_requests(path, "m", metadata=metadata())


def test_npy_inputs_keep_their_dtype_and_never_unpickle(tmp_path: Path) -> None:
    np.save(tmp_path / "ids.npy", np.arange(6, dtype=np.int64).reshape(2, 3))
    (request,) = inputs.npy_requests("m", {"IDS": tmp_path / "ids.npy"})
    assert request.inputs[0].datatype == "INT64"
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        inputs.npy_requests("m", {"O": tmp_path / "obj.npy"})
