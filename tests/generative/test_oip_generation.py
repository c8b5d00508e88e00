"""OIP requests with Triton's vLLM-backend tensor names against a real engine (no transport)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from modelport.errors import InvalidInput
from modelport.inference.generative.oip import FINAL
from modelport.inference.generative.serving import GenerativeModel
from modelport.proto.inference import grpc_service_pb2 as pb


def bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def request(
    text: str | None = None,
    ids: list[int] | None = None,
    *,
    stream: bool | None = None,
    sampling: dict | None = None,
    exclude: bool | None = None,
    **parameters,
) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="tiny", id="req-1")
    if text is not None:
        req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
        req.raw_input_contents.append(bytes_tensor([text.encode()]))
    if ids is not None:
        req.inputs.add(name="input_ids", datatype="INT32", shape=[len(ids)])
        req.raw_input_contents.append(np.asarray(ids, dtype=np.int32).tobytes())
    if stream is not None:
        req.inputs.add(name="stream", datatype="BOOL", shape=[1])
        req.raw_input_contents.append(np.asarray([stream]).tobytes())
    if exclude is not None:
        req.inputs.add(name="exclude_input_in_output", datatype="BOOL", shape=[1])
        req.raw_input_contents.append(np.asarray([exclude]).tobytes())
    if sampling is not None:
        req.inputs.add(name="sampling_parameters", datatype="BYTES", shape=[1])
        req.raw_input_contents.append(bytes_tensor([json.dumps(sampling).encode()]))
    for key, value in parameters.items():
        if isinstance(value, bool):
            req.parameters[key].bool_param = value
        elif isinstance(value, int):
            req.parameters[key].int64_param = value
        else:
            req.parameters[key].double_param = value
    return req


def output(response: pb.ModelInferResponse, name: str):
    index = [o.name for o in response.outputs].index(name)
    raw = response.raw_output_contents[index]
    datatype = response.outputs[index].datatype
    if datatype == "BYTES":
        (n,) = struct.unpack_from("<I", raw)
        return raw[4 : 4 + n].decode()
    return np.frombuffer(raw, dtype={"INT32": np.int32, "UINT32": np.uint32}[datatype]).tolist()


GREEDY = {"temperature": 0, "max_tokens": 6, "ignore_eos": True}


async def test_streamed_deltas_then_a_final_response_with_usage_and_timings(engine_factory):
    model = GenerativeModel(await engine_factory(), "tiny", "1")
    responses = [r async for r in model.stream(request("The harbor", stream=True, sampling=GREEDY))]
    assert len(responses) == 6
    assert [r.parameters[FINAL].bool_param for r in responses] == [False] * 5 + [True]
    final = responses[-1]
    assert output(final, "finish_reason") == "length" and output(final, "num_output_tokens") == [6]
    assert final.parameters["completion_tokens"].int64_param == 6
    assert final.parameters["time_to_first_token_us"].int64_param > 0
    whole = await model.infer(request("The harbor", sampling=GREEDY, exclude=True))
    assert "".join(output(r, "text_output") for r in responses) == output(whole, "text_output")
    assert [t for r in responses for t in output(r, "output_ids")] == output(whole, "output_ids")
    assert whole.id == "req-1" and whole.parameters[FINAL].bool_param


async def test_unary_echoes_the_prompt_unless_excluded_and_takes_parameters_as_sampling(
    engine_factory,
):
    model = GenerativeModel(await engine_factory(), "tiny", "1")
    echoed = await model.infer(request("The river", temperature=0.0, max_tokens=4, ignore_eos=True))
    bare = await model.infer(
        request("The river", sampling=GREEDY | {"max_tokens": 4}, exclude=True)
    )
    assert output(echoed, "text_output") == "The river" + output(bare, "text_output")
    assert output(echoed, "num_output_tokens") == [4]


async def test_token_ids_in_and_out(engine_factory):
    engine = await engine_factory()
    model = GenerativeModel(engine, "tiny", "1")
    ids = engine.tokenizer.encode("The river")
    by_ids = await model.infer(request(ids=ids, sampling=GREEDY))
    by_text = await model.infer(request("The river", sampling=GREEDY, exclude=True))
    assert output(by_ids, "output_ids") == output(by_text, "output_ids")
    assert output(by_ids, "num_input_tokens") == [len(ids)]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: request(), "exactly one"),
        (lambda: request("x", ids=[1]), "exactly one"),
        (lambda: request("x", sampling={"temperature": -1}), "temperature"),
        (lambda: request("x", sampling={"colour": 1}), "unknown key"),
        (lambda: request("x", max_tokens=0), "max_tokens"),
    ],
)
async def test_bad_requests_name_what_is_wrong(engine_factory, make, match):
    model = GenerativeModel(await engine_factory(), "tiny", "1")
    with pytest.raises(InvalidInput, match=match):
        await model.infer(make())


async def test_unknown_input_and_bad_json(engine_factory):
    model = GenerativeModel(await engine_factory(), "tiny", "1")
    bad = request("x")
    bad.inputs.add(name="prompt", datatype="BYTES", shape=[1])
    bad.raw_input_contents.append(bytes_tensor([b"y"]))
    with pytest.raises(InvalidInput, match="unknown input 'prompt'"):
        await model.infer(bad)
    broken = request("x")
    broken.inputs.add(name="sampling_parameters", datatype="BYTES", shape=[1])
    broken.raw_input_contents.append(bytes_tensor([b"{oops"]))
    with pytest.raises(InvalidInput, match="not JSON"):
        await model.infer(broken)
