"""A generative model served end to end: inference services over gRPC, the router in front.

Real servers on 127.0.0.1: the tiny model in `tiny_repo` behind `InferenceApp`s,
a `RouterApp` with its OpenAI HTTP API, the official `openai` client.
"""

from __future__ import annotations

import json
import struct

import grpc
import numpy as np
import openai
import pytest
from modelport.client import AsyncInferenceClient, ModelportClientError
from modelport.common.generative_load import from_metadata
from modelport.inference.generative.types import SamplingParams
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pbg

from tests.router.router_helpers import wait_until


def generation_request(
    prompt: str, *, stream: bool, model: str = "tiny", request_id: str = "g-1", **sampling: object
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    for name, value in (("text_input", prompt), ("sampling_parameters", json.dumps(sampling))):
        data = value.encode()
        request.inputs.add(name=name, datatype="BYTES", shape=[1])
        request.raw_input_contents.append(struct.pack("<I", len(data)) + data)
    request.inputs.add(name="stream", datatype="BOOL", shape=[1])
    request.raw_input_contents.append(np.asarray([stream]).tobytes())
    return request


def text_of(response: pb.ModelInferResponse) -> str:
    raw = response.raw_output_contents[[o.name for o in response.outputs].index("text_output")]
    return raw[4:].decode()


async def test_stream_unary_and_in_band_errors_at_the_replica_and_through_the_router(stack):
    one = await stack()
    greedy = dict(max_tokens=6, temperature=0, ignore_eos=True)
    engine = one.engine()
    reference = [
        out.token_ids
        async for out in engine.generate(
            engine.tokenizer.encode("The harbor", add_special_tokens=False),
            SamplingParams(**greedy),
        )
    ]
    for address in (f"127.0.0.1:{one.apps[0].port}", one.address):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pbg.GRPCInferenceServiceStub(channel)
            call = stub.ModelStreamInfer()
            await call.write(generation_request("The harbor", stream=True, max_tokens=0))
            await call.write(generation_request("The harbor", stream=True, **greedy))
            await call.done_writing()
            answers = [a async for a in call]
            refused, deltas = answers[0], answers[1:]
            assert "max_tokens" in refused.error_message
            assert refused.infer_response.parameters["error_code"].string_param == (
                "INVALID_ARGUMENT"
            )
            assert [a.error_message for a in deltas] == [""] * 6
            final = deltas[-1].infer_response.parameters
            assert final["triton_final_response"].bool_param
            assert final["completion_tokens"].int64_param == 6
            assert final["time_to_first_token_us"].int64_param > 0
            streamed = "".join(text_of(a.infer_response) for a in deltas)
            assert streamed == engine.tokenizer.decode(sum(reference, ()))

            whole = await stub.ModelInfer(generation_request("The harbor", stream=False, **greedy))
            assert text_of(whole) == "The harbor" + streamed  # unary: the whole completion
            assert whole.parameters["finish_reason"].string_param == "length"
            config = (await stub.ModelConfig(pb.ModelConfigRequest(name="tiny"))).config
            assert config.backend == "generative"
            assert config.parameters["chat_template"].string_value  # for the OpenAI layer


async def test_a_closed_stream_frees_its_slot_on_the_replica(stack):
    one = await stack()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{one.apps[0].port}") as channel:
        call = pbg.GRPCInferenceServiceStub(channel).ModelStreamInfer()
        await call.write(generation_request("The", stream=True, max_tokens=400, ignore_eos=True))
        await call.read()
        assert one.running() == [1]
        load = from_metadata(await call.initial_metadata())
        assert [(x.model, x.running) for x in load] == [("tiny", 1)]
        call.cancel()
        await wait_until(lambda: one.running() == [0], seconds=2.0)
        assert one.engine().load().kv_used_blocks == 0


async def test_the_router_balances_streams_by_load_and_cancels_on_the_replica(stack):
    one = await stack(replicas=2, max_num_seqs=4)
    api = openai.AsyncOpenAI(base_url=f"{one.url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in (await api.models.list()).data] == ["tiny"]

    async def stream(tokens: int) -> openai.AsyncStream:
        return await api.completions.create(
            model="tiny", prompt="The harbor", max_tokens=tokens, stream=True,
            extra_body={"ignore_eos": True},
        )  # fmt: skip

    warm = [c async for c in await stream(2)]  # the first answer brings a load report
    assert warm and one.router.router.balancer.loads.knows("tiny")
    streams = [await stream(400) for _ in range(6)]
    for s in streams:
        await s.__anext__()
    assert sorted(one.running()) == [3, 3], one.running()
    for s in streams:
        await s.close()  # the caller leaves: the router cancels the replica's call
    await wait_until(lambda: one.running() == [0, 0], seconds=3.0)
    board = one.router.router.balancer.loads
    assert {address for address, _ in board._loads} == {f"127.0.0.1:{app.port}" for app in one.apps}


async def test_the_sdk_streams_through_the_router_and_leaving_cancels_on_the_replica(stack):
    one = await stack()
    async with AsyncInferenceClient(one.address) as client:
        greedy = dict(max_tokens=6, temperature=0, ignore_eos=True)
        chunks = [c async for c in client.generate("tiny", "The harbor", **greedy)]
        assert [c.final for c in chunks] == [False] * (len(chunks) - 1) + [True]
        final = chunks[-1]
        assert (final.finish_reason, final.usage["completion_tokens"]) == ("length", 6)
        assert int(final.usage["time_to_first_token_us"]) > 0
        with pytest.raises(ModelportClientError, match="max_tokens") as refused:
            _ = [c async for c in client.generate("tiny", "The", max_tokens=0)]
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        # A caller that stops reading and closes its stream: the router cancels the
        # replica's call and the engine frees the sequence's slot.
        long = client.generate("tiny", "The", max_tokens=400, ignore_eos=True)
        await long.__anext__()
        assert one.running() == [1]
        await long.aclose()
        await wait_until(lambda: one.running() == [0], seconds=3.0)
        assert one.engine().load().kv_used_blocks == 0
