"""Sequence batching and decoupled models over real gRPC (tier 2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from modelport.proto.inference import grpc_service_pb2 as pb

from tests.inference.requests import output, raw_request

MODELS = ["simple_sequence", "simple_dyna_sequence", "simple_string_dyna_sequence",
          "repeat_int32"]  # fmt: skip
VALUES = [0, 11, 7, 5, 3, 2, 0, 1]


@pytest.fixture
async def stub(triton_repo: Path, inference_server, stub_for):  # type: ignore[no-untyped-def]
    app = await inference_server(triton_repo, model_control_mode="explicit", load_models=MODELS)
    return stub_for(app.address)


def sequence_request(
    model: str, corrid: int | str, value: int, start: bool, end: bool, request_id: str = ""
) -> pb.ModelInferRequest:
    request = raw_request(model, {"INPUT": ("INT32", np.array([[value]], np.int32))},
                          id=request_id)  # fmt: skip
    if isinstance(corrid, str):
        request.parameters["sequence_id"].string_param = corrid
    else:
        request.parameters["sequence_id"].int64_param = corrid
    request.parameters["sequence_start"].bool_param = start
    request.parameters["sequence_end"].bool_param = end
    return request


def requests_of(model: str, corrid: int | str, values: list[int]) -> list[pb.ModelInferRequest]:
    last = len(values) - 1
    return [sequence_request(model, corrid, v, i == 0, i == last, f"{corrid}_{i}")
            for i, v in enumerate(values)]  # fmt: skip


def value(response: pb.ModelInferResponse) -> int:
    return int(output(response, "OUTPUT", np.int32).reshape(-1)[0])


async def test_sync_sequences_keep_their_state(stub) -> None:  # type: ignore[no-untyped-def]
    seq0 = [value(await stub.ModelInfer(r)) for r in requests_of("simple_sequence", 1000, VALUES)]
    assert seq0 == [1, *VALUES[1:]]  # START adds one
    dyna = [value(await stub.ModelInfer(r))
            for r in requests_of("simple_dyna_sequence", 1001, VALUES)]  # fmt: skip
    assert dyna == [1, *VALUES[1:-1], VALUES[-1] + 1001]  # END adds the correlation id
    running = [20, -11, -7, -5]
    sums = [value(await stub.ModelInfer(r))
            for r in requests_of("simple_string_dyna_sequence", "1002", running)]  # fmt: skip
    assert sums == [20, 9, 2, -3 + 1002]  # implicit state: a running sum


async def test_streamed_sequences_interleave_and_stay_in_order(stub) -> None:  # type: ignore[no-untyped-def]
    async def all_requests() -> AsyncIterator[pb.ModelInferRequest]:
        for batch in zip(requests_of("simple_dyna_sequence", 7, VALUES),
                         requests_of("simple_dyna_sequence", 8, [100, *[-v for v in VALUES[1:]]]),
                         requests_of("simple_string_dyna_sequence", "1009", [1] * 8),
                         strict=True):  # fmt: skip
            for request in batch:
                yield request

    got: dict[str, list[int]] = {}
    async for answer in stub.ModelStreamInfer(all_requests(), timeout=30):
        assert not answer.error_message, answer.error_message
        response = answer.infer_response
        assert response.parameters["triton_final_response"].bool_param
        got.setdefault(response.id.split("_")[0], []).append(
            (int(response.id.split("_")[1]), value(response))  # type: ignore[arg-type]
        )
    ordered = {k: [v for _, v in sorted(pairs)] for k, pairs in got.items()}  # type: ignore[misc]
    assert ordered["7"] == [1, *VALUES[1:-1], 1 + 7]
    assert ordered["8"] == [101, *[-v for v in VALUES[1:-1]], -1 + 8]
    assert ordered["1009"] == [1, 2, 3, 4, 5, 6, 7, 8 + 1009]  # string id, implicit state


async def test_what_the_sequence_batcher_refuses(stub) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (sequence_request("simple_sequence", 0, 1, True, False),
         "must specify a non-zero or non-empty correlation ID"),
        (sequence_request("simple_sequence", 555, 1, False, False),
         "inference request for sequence 555 to model 'simple_sequence' must specify the START"),
        (sequence_request("simple_dyna_sequence", "text", 1, True, True),
         "correlation ID 'text' is a string"),
    ]  # fmt: skip
    for request, text in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ModelInfer(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert text in err.value.details()


def repeat_request(values: list[int], empty_final: bool = False) -> pb.ModelInferRequest:
    n = len(values)
    request = raw_request("repeat_int32", {
        "IN": ("INT32", np.array(values, np.int32)),
        "DELAY": ("UINT32", np.zeros(n, np.uint32)),
        "WAIT": ("UINT32", np.zeros(1, np.uint32)),
    }, id=f"r{n}")  # fmt: skip
    if empty_final:
        request.parameters["triton_enable_empty_final_response"].bool_param = True
    return request


async def test_decoupled_answers_zero_or_more_times_over_the_stream(stub) -> None:  # type: ignore[no-untyped-def]
    async def requests() -> AsyncIterator[pb.ModelInferRequest]:
        yield repeat_request([100, 101, 102])
        yield repeat_request([], empty_final=True)  # zero responses: only the final flag

    answers = [a async for a in stub.ModelStreamInfer(requests(), timeout=30)]
    assert not any(a.error_message for a in answers), [a.error_message for a in answers]
    by_id: dict[str, list[pb.ModelInferResponse]] = {}
    for a in answers:
        by_id.setdefault(a.infer_response.id, []).append(a.infer_response)
    three = by_id["r3"]
    assert [int(output(r, "OUT", np.int32)[0]) for r in three] == [100, 101, 102]
    assert [int(output(r, "IDX", np.uint32)[0]) for r in three] == [0, 1, 2]
    assert [r.parameters["triton_final_response"].bool_param for r in three] == [False, False, True]
    (empty,) = by_id["r0"]
    assert not empty.outputs and empty.parameters["triton_final_response"].bool_param


async def test_unary_infer_refuses_a_decoupled_model(stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ModelInfer(repeat_request([1]))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "ModelInfer RPC doesn't support models with decoupled transaction policy" in (
        err.value.details()
    )


async def test_idle_sequences_are_reclaimed(
    triton_repo: Path, tmp_path: Path, inference_server, stub_for
) -> None:  # type: ignore[no-untyped-def]
    import shutil

    repo = tmp_path / "models"
    shutil.copytree(triton_repo / "simple_sequence", repo / "simple_sequence")
    config = repo / "simple_sequence" / "config.pbtxt"
    config.write_text(
        config.read_text().replace(
            "sequence_batching {", "sequence_batching {\n  max_sequence_idle_microseconds: 100000"
        )
    )
    app = await inference_server(repo)
    stub = stub_for(app.address)
    await stub.ModelInfer(sequence_request("simple_sequence", 42, 1, True, False))
    await asyncio.sleep(0.4)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ModelInfer(sequence_request("simple_sequence", 42, 1, False, True))
    assert "must specify the START flag" in err.value.details()
