"""The OpenAI layer's `GenerationBackend` at the router: replicas over ModelStreamInfer.

A completion is one streamed OIP request with Triton's vLLM-backend names
(`text_input` or `input_ids`, `stream` true, `sampling_parameters` JSON),
routed like any streamed request (the router's plan, then the replica least
loaded by its reported generative load) and read answer by answer. Closing
the deltas closes the router's stream, which cancels the replica's call: the
sequence leaves the engine's batch within a step. Which models are
generative, and their chat templates, come from the replicas' ModelConfig
(`backend: "generative"` and the parameters a served version adds), cached
for a while per model.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport import errors
from modelport.artifacts.generative import BACKEND
from modelport.client.generation import first_text, generation_request, read_logprobs
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import model_config_pb2 as mc
from modelport.router.fleet import Fleet
from modelport.router.forwarding import Router
from modelport.router.openai.service import Delta, ModelInfo

FINAL = "triton_final_response"
ERROR_CODE = "error_code"


@dataclass
class _Cached:
    config: mc.ModelConfig
    at: float


class RouterGenerationBackend:
    def __init__(
        self,
        router: Router,
        fleet: Fleet,
        *,
        config_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.router = router
        self.fleet = fleet
        self.config_seconds = config_seconds
        self.clock = clock
        self._configs: dict[str, _Cached] = {}

    async def _config(self, name: str) -> mc.ModelConfig:
        cached = self._configs.get(name)
        if cached is not None and self.clock() - cached.at < self.config_seconds:
            return cached.config
        config = (await self.fleet.model_config(name, "")).config
        self._configs[name] = _Cached(config, self.clock())
        return config

    async def models(self) -> list[ModelInfo]:
        found = []
        for name in sorted(self.router.table.known_models()):
            try:
                found.append(await self.model(name))
            except errors.ModelportError:
                continue  # not generative, or no replica ready now
        return found

    async def model(self, name: str) -> ModelInfo:
        if name not in self.router.table.known_models():
            raise errors.NotFound(f"model '{name}': no replica serves this model")
        config = await self._config(name)
        if config.backend != BACKEND:
            raise errors.NotFound(
                f"model '{name}' is not a generative model (the OpenAI API serves "
                "generative models; call it over gRPC ModelInfer)"
            )
        params = {key: value.string_value for key, value in config.parameters.items()}
        return ModelInfo(
            id=name,
            chat_template=params.get("chat_template") or None,
            bos_token=params.get("bos_token", ""),
            eos_token=params.get("eos_token", ""),
        )

    async def generate(
        self, model: str, prompt: str | list[int], sampling: dict[str, Any]
    ) -> AsyncIterator[Delta]:
        request = stream_request(model, prompt, sampling)
        async for message in self.router.stream(model, "", request):
            delta = read_delta(message)
            yield delta
            if delta.finish_reason is not None:
                return


def stream_request(model: str, prompt: str | list[int], sampling: dict[str, Any]) -> bytes:
    """The ModelInferRequest (serialized) that asks `model` to stream a completion."""
    request = generation_request(model, prompt, sampling, request_id=f"oai-{uuid.uuid4().hex[:16]}")
    data: bytes = request.SerializeToString()
    return data


def read_delta(message: bytes) -> Delta:
    """One streamed answer as a delta; a replica's in-band error raised with its code."""
    answer = pb.ModelStreamInferResponse.FromString(message)
    response = answer.infer_response
    if answer.error_message:
        code = response.parameters[ERROR_CODE].string_param if (
            ERROR_CODE in response.parameters
        ) else "INTERNAL"  # fmt: skip
        raise errors.from_code(code, answer.error_message)
    raw = {o.name: response.raw_output_contents[i] for i, o in enumerate(response.outputs)}
    final = FINAL in response.parameters and response.parameters[FINAL].bool_param
    reason = first_text(raw.get("finish_reason", b"")) if final else ""
    return Delta(
        text=first_text(raw.get("text_output", b"")),
        finish_reason=(reason or "stop") if final else None,
        prompt_tokens=_count(raw.get("num_input_tokens", b"")),
        completion_tokens=_count(raw.get("num_output_tokens", b"")),
        error=response.parameters["error"].string_param if "error" in response.parameters
        else None,
        logprobs=read_logprobs(response),
    )  # fmt: skip


def _count(raw: bytes) -> int:
    return int(np.frombuffer(raw[:4], dtype=np.uint32)[0]) if len(raw) >= 4 else 0
