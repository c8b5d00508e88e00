"""`engine: vllm` through the front door: an inference service whose tiny model runs in
vLLM (its own process, .venv-vllm), ModelStreamInfer at the replica and through the
router, and the official `openai` client at the router. Collected only where
.venv-vllm exists (conftest's collect_ignore); the conformance suite covers the engine.
"""

from __future__ import annotations

import grpc
import openai
import pytest
import torch
from modelport.inference.generative.vllm_engine import VllmEngine
from modelport.proto.inference import grpc_service_pb2_grpc as pbg

from tests.generative.test_generative_serving import generation_request, text_of

# The service's start includes vLLM's (about a minute); `make test-vllm` selects the mark.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]


async def test_a_vllm_model_streams_over_grpc_and_the_openai_api(stack, reference_model):
    one = await stack(generative_engine="vllm")
    engine = one.engine()
    assert isinstance(engine, VllmEngine)
    prompt = engine.tokenizer.encode("The harbor", add_special_tokens=False)
    with torch.inference_mode():
        expected = reference_model.model.generate(
            torch.tensor([prompt]), max_new_tokens=6, min_new_tokens=6, do_sample=False,
            pad_token_id=0,
        )[0, len(prompt) :].tolist()  # fmt: skip
    greedy = dict(max_tokens=6, temperature=0, ignore_eos=True)
    for address in (f"127.0.0.1:{one.apps[0].port}", one.address):
        async with grpc.aio.insecure_channel(address) as channel:
            call = pbg.GRPCInferenceServiceStub(channel).ModelStreamInfer()
            await call.write(generation_request("The harbor", stream=True, **greedy))
            await call.done_writing()
            deltas = [a async for a in call]
        assert [a.error_message for a in deltas] == [""] * 6
        final = deltas[-1].infer_response.parameters
        assert final["triton_final_response"].bool_param
        assert final["completion_tokens"].int64_param == 6
        assert final["finish_reason"].string_param == "length"
        streamed = "".join(text_of(a.infer_response) for a in deltas)
        assert streamed == engine.tokenizer.decode(expected, skip_special_tokens=True)
    client = openai.AsyncOpenAI(base_url=f"{one.url}/v1", api_key="unused", max_retries=0)
    completion = await client.completions.create(
        model="tiny", prompt="The harbor", max_tokens=6, temperature=0,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    assert completion.choices[0].text == streamed
    assert completion.usage is not None and completion.usage.completion_tokens == 6
