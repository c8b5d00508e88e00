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
class TokenLogprob:
    """One generated token's log-probability, with the most likely alternatives (asked n)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()  # (token, logprob), most likely first


@dataclass(frozen=True)
class GenerationChunk:
    """One streamed answer: a text delta; the final one has finish_reason and usage."""

    text: str
    final: bool
    finish_reason: str = ""
    usage: dict[str, int | str] = field(default_factory=dict)
    logprobs: tuple[TokenLogprob, ...] = ()  # when the request asked `logprobs`


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
        logprobs=read_logprobs(response),
    )


def read_logprobs(response: pb.ModelInferResponse) -> tuple[TokenLogprob, ...]:
    """The answer's token logprobs (`token_logprobs`, `token_texts`, `top_logprob*`), if any."""
    found = {o.name: (i, list(o.shape)) for i, o in enumerate(response.outputs)}
    if "token_logprobs" not in found or "token_texts" not in found:
        return ()

    def raw(name: str) -> bytes:
        return bytes(response.raw_output_contents[found[name][0]])

    values = raw("token_logprobs")
    logprobs = struct.unpack(f"<{len(values) // 4}f", values)
    texts = _texts(raw("token_texts"))
    top: list[tuple[tuple[str, float], ...]] = [()] * len(logprobs)
    if "top_logprobs" in found and "top_logprob_texts" in found:
        shape = found["top_logprobs"][1]
        k = shape[1] if len(shape) == 2 else 0
        top_values = raw("top_logprobs")
        flat = struct.unpack(f"<{len(top_values) // 4}f", top_values)
        top_texts = _texts(raw("top_logprob_texts"))
        top = [
            tuple(
                (top_texts[i * k + j], flat[i * k + j])
                for j in range(k)
                if flat[i * k + j] != float("-inf")  # padding past a small vocabulary
            )
            for i in range(len(logprobs))
        ]
    return tuple(
        TokenLogprob(text, value, alternatives)
        for text, value, alternatives in zip(texts, logprobs, top, strict=True)
    )


def _texts(raw: bytes) -> list[str]:
    """Every element of a BYTES tensor's raw contents."""
    texts, offset = [], 0
    while offset + 4 <= len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        texts.append(raw[offset + 4 : offset + 4 + length].decode(errors="replace"))
        offset += 4 + length
    return texts


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
