"""KServe's Python gRPC client against a live modelport: `python kserve_calls.py HOST:PORT`.

Run as its own process: KServe's stubs and tritonclient's both define the
`inference.*` protobuf messages, so they cannot share one Python process. Prints
one JSON object describing what came back; the test asserts on it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.infer_type import RequestedOutput


def _bytes_input(name: str, data: np.ndarray, *, raw: bool) -> InferInput:
    tensor = InferInput(name, list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data, binary_data=raw)
    return tensor


def _described(response: Any) -> dict[str, Any]:
    return {
        o.name: {"shape": list(o.shape), "datatype": o.datatype,
                 "data": [x.decode() if isinstance(x, bytes) else x
                          for x in o.as_numpy().reshape(-1).tolist()]}
        for o in response.outputs
    }  # fmt: skip


async def main(url: str) -> None:
    client = InferenceGRPCClient(url)
    seen: dict[str, Any] = {"live": await client.is_server_live()}
    words = np.array([[b"a", b"bb", b"\x00c"]], dtype=object)
    for raw in (True, False):
        request = InferRequest("simple_identity", [_bytes_input("INPUT0", words, raw=raw)])
        seen[f"identity_raw={raw}"] = _described(await client.infer(request))
    numbers = np.arange(32).reshape(2, 16)
    pair = [
        _bytes_input("INPUT0", np.vectorize(lambda x: str(x).encode(), otypes=[object])(numbers),
                     raw=True),
        _bytes_input("INPUT1", np.full((2, 16), b"1", dtype=object), raw=True),
    ]  # fmt: skip
    seen["strings_batched"] = _described(await client.infer(InferRequest("simple_string", pair)))
    image = InferInput("input", [1, 299, 299, 3], "FP32")
    image.set_data_from_numpy(np.full((1, 299, 299, 3), 0.5, dtype=np.float32))
    top = InferRequest("inception_batched", [image],
                       request_outputs=[RequestedOutput("scores", {"classification": 3})])  # fmt: skip
    seen["classified"] = _described(await client.infer(top))
    try:
        await client.infer(InferRequest("no_such_model", [image]))
    except Exception as exc:  # the client raises grpc's error, as it is
        seen["unknown_model"] = str(exc)
    await client.close()
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
