"""Generation over the standard protocol: the request a generative model streams, and
its answers read back (Triton's vLLM-backend tensor names; no numpy on the caller's side).

    with InferenceClient("127.0.0.1:8001") as client:
        for chunk in client.generate("tiny-llama", "The baker", max_tokens=30):
            print(chunk.text, end="")
        chunk.usage  # the final chunk: prompt/completion tokens, queue, TTFT, ITL (µs)

The router's OpenAI API builds its requests here too, so both front doors ask alike.
"""

from __future__ import annotations

import json
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from modelport.proto.inference import grpc_service_pb2 as pb

FINAL = "triton_final_response"
# Response parameters every final answer carries (int64 unless named otherwise).
USAGE_KEYS = (
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
    "queue_time_us",
    "time_to_first_token_us",
    "mean_inter_token_latency_us",
    "e2e_time_us",
)


@dataclass(frozen=True)
class GenerationChunk:
    """One streamed answer: a text delta; the final one has finish_reason and usage."""

    text: str
    final: bool
    finish_reason: str = ""
    usage: dict[str, int | str] = field(default_factory=dict)


def generation_request(
    model: str,
    prompt: str | list[int],
    sampling: dict[str, Any],
    *,
    request_id: str = "",
    version: str = "",
) -> pb.ModelInferRequest:
    """Ask `model` to stream a completion of `prompt` (text, or token ids)."""
    request = pb.ModelInferRequest(
        model_name=model, model_version=version, id=request_id or f"gen-{uuid.uuid4().hex[:16]}"
    )
    if isinstance(prompt, str):
        _bytes_input(request, "text_input", prompt)
    else:
        request.inputs.add(name="input_ids", datatype="INT64", shape=[len(prompt)])
        request.raw_input_contents.append(struct.pack(f"<{len(prompt)}q", *prompt))
    request.inputs.add(name="stream", datatype="BOOL", shape=[1])
    request.raw_input_contents.append(b"\x01")
    _bytes_input(request, "sampling_parameters", json.dumps(sampling))
    return request


def read_chunk(response: pb.ModelInferResponse) -> GenerationChunk:
    """The text delta of one streamed answer, with usage when it is the final one."""
    raw = {o.name: response.raw_output_contents[i] for i, o in enumerate(response.outputs)}
    params = response.parameters
    final = FINAL in params and params[FINAL].bool_param
    usage: dict[str, int | str] = {}
    if final:
        for key in USAGE_KEYS:
            if key in params:
                which = params[key].WhichOneof("parameter_choice") or "string_param"
                usage[key] = getattr(params[key], which)
    return GenerationChunk(
        text=first_text(raw.get("text_output", b"")),
        final=final,
        finish_reason=first_text(raw.get("finish_reason", b"")) if final else "",
        usage=usage,
    )


def first_text(raw: bytes) -> str:
    """The first element of a BYTES tensor's raw contents (4-byte length, then the bytes)."""
    if len(raw) < 4:
        return ""
    (length,) = struct.unpack_from("<I", raw)
    return raw[4 : 4 + length].decode(errors="replace")


def _bytes_input(request: pb.ModelInferRequest, name: str, text: str) -> None:
    data = text.encode()
    request.inputs.add(name=name, datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", len(data)) + data)
