"""Traffic policies at the router, seen through tritonclient (a standard Triton client).

Runs in the tritonclient venv; the router stack runs in the project's Python
(found next to MODELPORT_BIN) as a subprocess.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

STACK = Path(__file__).resolve().parent / "router_stack.py"


class Stack:
    def __init__(self, python: Path, counts: Path) -> None:
        self.counts = counts
        self.process = subprocess.Popen(
            [str(python), str(STACK), str(counts)], stdout=subprocess.PIPE
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "router stack did not start"
        self.address: str = json.loads(line)["router"]

    def stop(self) -> list[dict[str, int]]:
        """Stop the stack; what each replica answered, as 'model:version' -> count."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
        return json.loads(self.counts.read_text()) if self.counts.exists() else []


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    binary = os.environ.get("MODELPORT_BIN")
    if not binary:
        pytest.skip("MODELPORT_BIN is not set (run through `make conformance`)")
    running = Stack(Path(binary).parent / "python", tmp_path / "counts.json")
    try:
        yield running
    finally:
        running.stop()


def simple_inputs(rows: int = 1) -> tuple[list[triton.InferInput], np.ndarray]:
    x = np.arange(16 * rows, dtype=np.int32).reshape(rows, 16)
    inputs = [triton.InferInput(n, [rows, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    for item in inputs:
        item.set_data_from_numpy(x)
    return inputs, x


def test_policies_through_tritonclient(stack: Stack) -> None:
    client = triton.InferenceServerClient(stack.address)
    assert client.is_server_ready() and client.is_model_ready("simple")
    inputs, x = simple_inputs()

    # Canary split 90/10 within ±5 points over 2,000 requests.
    versions = collections.Counter(
        client.infer("simple", inputs).get_response().model_version for _ in range(2000)
    )
    assert abs(versions["2"] / 2000 - 0.10) <= 0.05, versions
    # An alias or a number in model_version picks the version.
    assert (
        client.infer("simple", inputs, model_version="canary").get_response().model_version == "2"
    )
    assert client.infer("simple", inputs, model_version="1").get_response().model_version == "1"

    # Shadow: answered by production, a copy to canary.
    for _ in range(20):
        answer = client.infer("simple_shadow", inputs)
        assert answer.get_response().model_version == "1"
        np.testing.assert_array_equal(answer.as_numpy("OUTPUT0"), 2 * x)

    # Ensemble: the mean of mlp version 1 (1 x INPUT) and version 2 (2 x INPUT).
    features = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    tensor = triton.InferInput("INPUT", [3, 4], "FP32")
    tensor.set_data_from_numpy(features)
    mean = client.infer("mlp", [tensor]).as_numpy("OUTPUT")
    np.testing.assert_allclose(mean, 1.5 * features, rtol=1e-6)

    # Scatter: 6 rows split across the two replicas, gathered in order.
    batch, rows = simple_inputs(rows=6)
    answer = client.infer("simple_scatter", batch)
    np.testing.assert_array_equal(answer.as_numpy("OUTPUT0"), 2 * rows)
    np.testing.assert_array_equal(answer.as_numpy("OUTPUT1"), 0 * rows)

    with pytest.raises(triton.InferenceServerException, match=r"PERMISSION_DENIED|refused"):
        client.load_model("simple")
    client.close()

    # What the replicas saw: the shadow copies reached the canary version,
    # and the scatter used both replicas.
    counts = stack.stop()
    assert sum(c.get("simple_shadow:2", 0) for c in counts) == 20
    assert sum(c.get("simple_shadow:1", 0) for c in counts) == 20
    assert all(c.get("simple_scatter:1", 0) == 1 for c in counts)
    assert all(sum(c.values()) > 100 for c in counts)  # per request, not per connection
