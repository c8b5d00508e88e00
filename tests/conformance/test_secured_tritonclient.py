"""The secured front door seen through tritonclient: mutual TLS with real
certificates, API keys in `authorization: Bearer`, a deny-by-default policy and a
quota at the router, and an inference service that serves only the router.

The stack (tests/support/secured_stack.py) runs in the project's Python, found next to
MODELPORT_BIN; tritonclient talks to it as any Triton user would.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

STACK = Path(__file__).resolve().parents[1] / "support" / "secured_stack.py"


@pytest.fixture(scope="module")
def stack(
    modelport_bin: str, samples_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("secured")
    python = Path(modelport_bin).parent / "python"
    process = subprocess.Popen(
        [str(python), str(STACK), str(folder), str(samples_repo)], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    try:
        assert line, "the secured stack did not start"
        yield json.loads(line)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def client(
    stack: dict[str, Any], address: str = "", certificate: bool = True
) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(
        address or stack["router"],
        ssl=True,
        root_certificates=stack["ca"],
        private_key=stack["client_key"] if certificate else None,
        certificate_chain=stack["client_cert"] if certificate else None,
    )


def bearer(stack: dict[str, Any], tenant: str) -> dict[str, str]:
    return {"authorization": f"Bearer {stack['keys'][tenant]}"}


def simple_inputs() -> tuple[list[triton.InferInput], np.ndarray]:
    x = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [triton.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    for item in inputs:
        item.set_data_from_numpy(x)
    return inputs, x


def refusal(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_an_authorized_tenant_infers_and_sees_only_its_models(stack: dict[str, Any]) -> None:
    c = client(stack)
    headers = bearer(stack, "team-a")
    inputs, x = simple_inputs()
    result = c.infer("simple", inputs, headers=headers)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x + x)
    index = c.get_model_repository_index(headers=headers, as_json=True)
    assert [m["name"] for m in index.get("models", [])] == ["simple"]  # mlp exists, unseen
    assert c.is_model_ready("simple", headers=headers)

    denied = refusal(lambda: c.infer("mlp", inputs, headers=headers))
    assert denied.status() == "StatusCode.PERMISSION_DENIED"
    assert "infer" in denied.message() and "mlp" in denied.message()


def test_missing_or_wrong_keys_are_unauthenticated(stack: dict[str, Any]) -> None:
    c = client(stack)
    inputs, _ = simple_inputs()
    for headers in ({}, {"authorization": "Bearer mpk_000000000000_nope"}):
        refused = refusal(lambda h=headers: c.infer("simple", inputs, headers=h))  # type: ignore[misc]
        assert refused.status() == "StatusCode.UNAUTHENTICATED"
        assert "mpk_" not in refused.message()  # nothing that helps guessing


def test_over_quota_is_resource_exhausted(stack: dict[str, Any]) -> None:
    c = client(stack)
    inputs, _ = simple_inputs()
    headers = bearer(stack, "team-b")  # 1 request/s, burst 1
    codes = []
    for _ in range(4):
        try:
            c.infer("simple", inputs, headers=headers)
            codes.append("OK")
        except InferenceServerException as exc:
            codes.append(str(exc.status()))
    assert codes[0] == "OK" and "StatusCode.RESOURCE_EXHAUSTED" in codes


def test_without_a_client_certificate_the_handshake_fails(stack: dict[str, Any]) -> None:
    c = client(stack, certificate=False)
    refused = refusal(lambda: c.is_server_ready(headers=bearer(stack, "team-a")))
    assert refused.status() == "StatusCode.UNAVAILABLE"


def test_the_replica_serves_only_the_router(stack: dict[str, Any]) -> None:
    """A valid certificate and key, but not the router's identity: refused at the replica."""
    c = client(stack, stack["inference"])
    inputs, _ = simple_inputs()
    refused = refusal(lambda: c.infer("simple", inputs, headers=bearer(stack, "team-a")))
    assert refused.status() == "StatusCode.UNAUTHENTICATED"
