"""The SDK is for callers: importing it loads no torch and no server code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

SERVER_SIDE = (
    "torch",
    "modelport.inference",
    "modelport.router",
    "modelport.registry",
    "modelport.training",
    "modelport.common",
    "modelport.cli",
    "modelport.loadtest",
)

PROBE = """
import json, sys
import modelport.client, modelport.client.registry, modelport.client.codec
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_the_sdk_pulls_in_neither_torch_nor_a_service() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout)
    assert "modelport.client.registry" in loaded  # the probe did import the SDK
    offending = [
        m for m in loaded if m in SERVER_SIDE or m.startswith(tuple(f"{p}." for p in SERVER_SIDE))
    ]
    assert offending == []
