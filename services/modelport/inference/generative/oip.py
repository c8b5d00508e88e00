"""OIP messages ↔ generation calls, with Triton's vLLM-backend names.

Inputs (all optional but one of the prompts): `text_input` BYTES [1],
`input_ids` INT32/INT64 [n] (callers that tokenize), `stream` BOOL [1],
`sampling_parameters` BYTES [1] (JSON, vLLM's keys), `exclude_input_in_output`
BOOL [1]. Sampling keys may also come as request parameters of the same names.
Outputs: `text_output` BYTES, `output_ids` INT32, `finish_reason` BYTES,
`num_input_tokens` / `num_output_tokens` UINT32; with `logprobs` n asked,
also `token_logprobs` FP32 [t] and `token_texts` BYTES [t] for the t tokens of
the answer and, when n > 0, `top_logprob_ids` INT32 [t, n], `top_logprobs`
FP32 [t, n] and `top_logprob_texts` BYTES [t, n] (most likely first; the
model's log-softmax before temperature and truncation). Streaming answers carry each
delta; the last has `triton_final_response` true and, like every final
response, usage and timings as response parameters. A unary ModelInfer is the
whole completion in one response.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelport.errors import InvalidInput
from modelport.inference.codec import encode_bytes
from modelport.inference.generative.types import GenerationOutput, SamplingParams, TokenLogprob
from modelport.proto.inference import grpc_service_pb2 as pb

FINAL = "triton_final_response"
_INPUTS = {"text_input", "input_ids", "stream", "sampling_parameters", "exclude_input_in_output"}
_SAMPLING_PARAMETER_KEYS = {
    "max_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "ignore_eos",
    "logprobs",
}  # fmt: skip


@dataclass
class GenerationCall:
    prompt_text: str | None
    prompt_ids: list[int] | None
    params: SamplingParams
    stream: bool = False
    exclude_input: bool = False
    request_id: str = ""
    echo_parameters: dict[str, pb.InferParameter] = field(default_factory=dict)


def _raw(request: pb.ModelInferRequest, index: int) -> bytes | None:
    contents = request.raw_input_contents
    return contents[index] if index < len(contents) else None


def _bytes_values(
    model: str, tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None
) -> list[bytes]:
    if raw is None:
        return list(tensor.contents.bytes_contents)
    values, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput(f"model '{model}': input '{tensor.name}' BYTES data ends early")
        (length,) = struct.unpack_from("<I", raw, offset)
        values.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    if offset != len(raw):
        raise InvalidInput(f"model '{model}': input '{tensor.name}' BYTES element overruns")
    return values


def _one(model: str, tensor: pb.ModelInferRequest.InferInputTensor, values: list[Any]) -> Any:
    if len(values) != 1:
        raise InvalidInput(
            f"model '{model}': input '{tensor.name}' must hold one element, got {len(values)}"
        )
    return values[0]


def _read(model: str, tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> Any:
    kind = tensor.datatype
    name = tensor.name
    if name in ("text_input", "sampling_parameters"):
        if kind != "BYTES":
            raise InvalidInput(f"model '{model}': input '{name}' must be BYTES, got {kind}")
        try:
            return _one(model, tensor, _bytes_values(model, tensor, raw)).decode()
        except UnicodeDecodeError:
            raise InvalidInput(f"model '{model}': input '{name}' is not UTF-8") from None
    if name in ("stream", "exclude_input_in_output"):
        if kind != "BOOL":
            raise InvalidInput(f"model '{model}': input '{name}' must be BOOL, got {kind}")
        values = (
            list(np.frombuffer(raw, dtype=np.bool_))
            if raw is not None
            else list(tensor.contents.bool_contents)
        )
        return bool(_one(model, tensor, values))
    # input_ids
    if kind not in ("INT32", "INT64"):
        raise InvalidInput(f"model '{model}': input 'input_ids' must be INT32 or INT64, got {kind}")
    if raw is not None:
        return np.frombuffer(raw, dtype=np.int32 if kind == "INT32" else np.int64).tolist()
    return list(tensor.contents.int_contents if kind == "INT32" else tensor.contents.int64_contents)


def _parameter_value(param: pb.InferParameter) -> Any:
    return getattr(param, param.WhichOneof("parameter_choice") or "string_param")


def parse_request(
    request: pb.ModelInferRequest, model: str, defaults: dict[str, Any] | None = None
) -> GenerationCall:
    """A validated call; InvalidInput names the input or key at fault."""
    values: dict[str, Any] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name not in _INPUTS:
            raise InvalidInput(
                f"model '{model}': unknown input '{tensor.name}' (inputs: {sorted(_INPUTS)})"
            )
        values[tensor.name] = _read(model, tensor, _raw(request, index))
    sampling: dict[str, Any] = dict(defaults or {})
    for key, param in request.parameters.items():
        if key in _SAMPLING_PARAMETER_KEYS:
            sampling[key] = _parameter_value(param)
        elif key == "stop":
            sampling["stop"] = [_parameter_value(param)]
    if "sampling_parameters" in values:
        try:
            given = json.loads(values["sampling_parameters"] or "{}")
        except ValueError as error:
            raise InvalidInput(
                f"model '{model}': sampling_parameters is not JSON ({error})"
            ) from None
        if not isinstance(given, dict):
            raise InvalidInput(f"model '{model}': sampling_parameters must be a JSON object")
        sampling.update(given)
    params = SamplingParams.from_mapping(sampling, where=f"model '{model}': sampling_parameters")
    text, ids = values.get("text_input"), values.get("input_ids")
    if (text is None) == (ids is None):
        raise InvalidInput(f"model '{model}': give exactly one of 'text_input' and 'input_ids'")
    return GenerationCall(
        prompt_text=text,
        prompt_ids=[int(t) for t in ids] if ids is not None else None,
        params=params,
        stream=bool(values.get("stream", False)),
        exclude_input=bool(values.get("exclude_input_in_output", False)),
        request_id=request.id,
    )


def build_response(
    call: GenerationCall,
    model: str,
    version: str,
    output: GenerationOutput,
    *,
    text: str,
    token_ids: tuple[int, ...] | list[int],
    final: bool,
    logprobs: Sequence[TokenLogprob] = (),
    token_text: Callable[[int], str] = str,
) -> pb.ModelInferResponse:
    """One response: the delta (streaming) or the whole completion (text/token_ids given)."""
    response = pb.ModelInferResponse(model_name=model, model_version=version, id=call.request_id)
    if call.prompt_text is not None and not call.exclude_input and not call.stream:
        text = call.prompt_text + text
    reason = output.finish_reason.value if (final and output.finish_reason) else ""
    tensors = [
        ("text_output", "BYTES", encode_bytes(np.array([text.encode()], dtype=np.object_)), 1),
        ("output_ids", "INT32", np.asarray(token_ids, dtype=np.int32).tobytes(), len(token_ids)),
        ("finish_reason", "BYTES", encode_bytes(np.array([reason.encode()], dtype=np.object_)), 1),
        ("num_input_tokens", "UINT32", np.uint32(output.num_prompt_tokens).tobytes(), 1),
        ("num_output_tokens", "UINT32", np.uint32(output.num_output_tokens).tobytes(), 1),
    ]
    shaped = [(name, datatype, raw, [size]) for name, datatype, raw, size in tensors]
    if call.params.logprobs is not None:
        shaped.extend(_logprob_tensors(logprobs, call.params.logprobs, token_text))
    for name, datatype, raw, shape in shaped:
        response.outputs.add(name=name, datatype=datatype, shape=shape)
        response.raw_output_contents.append(raw)
    response.parameters[FINAL].bool_param = final
    if final:
        usage = response.parameters
        usage["prompt_tokens"].int64_param = output.num_prompt_tokens
        usage["completion_tokens"].int64_param = output.num_output_tokens
        usage["finish_reason"].string_param = reason
        if output.timings is not None:
            t = output.timings
            usage["queue_time_us"].int64_param = round(t.queue_s * 1e6)
            usage["time_to_first_token_us"].int64_param = round(t.ttft_s * 1e6)
            usage["mean_inter_token_latency_us"].int64_param = round(t.mean_itl_s * 1e6)
            usage["e2e_time_us"].int64_param = round(t.e2e_s * 1e6)
        if output.error:
            usage["error"].string_param = output.error
    return response


def _texts(texts: list[str]) -> bytes:
    return encode_bytes(np.array([t.encode() for t in texts], dtype=np.object_))


def _logprob_tensors(
    logprobs: Sequence[TokenLogprob], top: int, token_text: Callable[[int], str]
) -> list[tuple[str, str, bytes, list[int]]]:
    """The answer's tokens' logprobs (and their `top` alternatives) as output tensors."""
    n = len(logprobs)
    tensors = [
        ("token_logprobs", "FP32", np.array([lp.logprob for lp in logprobs], "<f4").tobytes(), [n]),
        ("token_texts", "BYTES", _texts([token_text(lp.token_id) for lp in logprobs]), [n]),
    ]
    if top:
        # A row holds `top` entries unless the vocabulary is smaller: pad with -inf.
        ids = np.zeros((n, top), dtype="<i4")
        values = np.full((n, top), -np.inf, dtype="<f4")
        texts: list[str] = []
        for i, lp in enumerate(logprobs):
            for j, (token_id, value) in enumerate(lp.top[:top]):
                ids[i, j], values[i, j] = token_id, value
            texts.extend(token_text(int(t)) for t in ids[i])
        tensors += [
            ("top_logprob_ids", "INT32", ids.tobytes(), [n, top]),
            ("top_logprobs", "FP32", values.tobytes(), [n, top]),
            ("top_logprob_texts", "BYTES", _texts(texts), [n, top]),
        ]
    return tensors
