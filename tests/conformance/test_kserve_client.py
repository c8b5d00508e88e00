"""KServe's Python client (`kserve.InferenceGRPCClient`) against the Triton example models,
served directly and through the router: N-D BYTES raw and typed, batched strings,
classification, and the unknown-model error in Triton's words."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CALLS = Path(__file__).with_name("kserve_calls.py")


@pytest.mark.parametrize("through", ["server", "router"])
def test_kserve_client(through: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("triton_url" if through == "server" else "triton_router_url")
    # Its own process: KServe's stubs and tritonclient's cannot share one protobuf pool.
    done = subprocess.run([sys.executable, str(CALLS), url], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout)
    assert seen["live"] is True
    words = {"shape": [1, 3], "datatype": "BYTES", "data": ["a", "bb", "\x00c"]}
    assert seen["identity_raw=True"] == {"OUTPUT0": words}
    assert seen["identity_raw=False"] == {"OUTPUT0": words}
    strings = seen["strings_batched"]
    assert strings["OUTPUT0"]["shape"] == [2, 16] and strings["OUTPUT1"]["shape"] == [2, 16]
    assert [int(x) for x in strings["OUTPUT0"]["data"]] == list(range(1, 33))
    assert [int(x) for x in strings["OUTPUT1"]["data"]] == list(range(-1, 31))
    top = seen["classified"]["scores"]
    assert top["shape"] == [1, 3] and top["datatype"] == "BYTES"
    scores = [entry.split(":") for entry in top["data"]]
    assert all(label == f"inception_{index}" for _, index, label in scores)
    assert [float(s) for s, _, _ in scores] == sorted(
        (float(s) for s, _, _ in scores), reverse=True
    )
    assert "Request for unknown model: 'no_such_model' is not found" in seen["unknown_model"]
