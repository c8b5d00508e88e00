"""The SDK against a real grpc.aio OIP server on loopback (tests/support/toy_oip_server.py)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from modelport.client import AsyncInferenceClient, InferenceClient, ModelportClientError, codec

from tests.support.toy_oip_server import serve_toy, toy_server_in_thread

# One array per OIP datatype numpy can hold, with values at the edges of each type.
ARRAYS = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([0, 255], dtype=np.uint8),
    "UINT16": np.array([0, 65535], dtype=np.uint16),
    "UINT32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "INT8": np.array([-128, 127], dtype=np.int8),
    "INT16": np.array([-(2**15), 2**15 - 1], dtype=np.int16),
    "INT32": np.array([[-(2**31)], [2**31 - 1]], dtype=np.int32),
    "INT64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "FP16": np.array([0.5, -65504.0, np.inf], dtype=np.float16),
    "FP32": np.array([[1.5, -2.25], [3.0e38, 1e-38]], dtype=np.float32),
    "FP64": np.array([np.pi, -1e308]),
}


def test_bytes_encoding_is_length_prefixed_little_endian() -> None:
    raw = codec.encode_bytes(np.array([b"ab", "é", b""], dtype=object))
    assert raw == b"\x02\x00\x00\x00ab" + b"\x02\x00\x00\x00\xc3\xa9" + b"\x00\x00\x00\x00"
    decoded = codec.decode_bytes(raw, [3])
    assert decoded.tolist() == [b"ab", "é".encode(), b""]
    with pytest.raises(ValueError, match="past the buffer"):
        codec.decode_bytes(b"\x09\x00\x00\x00ab", [1])
    with pytest.raises(ValueError, match="after 1 elements"):
        codec.decode_bytes(raw, [1])


def test_bf16_rounds_to_nearest_even_and_widens_exactly() -> None:
    values = np.array([1.0, 1.00390625, 1.01171875, -3.5, np.nan], dtype=np.float32)
    bits = codec.float32_to_bf16_bits(values)
    # 1 + 2^-8 is a tie between 1.0 and 1+2^-7: even mantissa (1.0) wins; 1+3*2^-8 rounds up.
    assert bits[:4].tolist() == [0x3F80, 0x3F80, 0x3F82, 0xC060]
    back = codec.bf16_bits_to_float32(bits)
    assert back[:4].tolist() == [1.0, 1.0, 1.015625, -3.5]
    assert np.isnan(back[4])


def test_datatype_of_rejects_unsupported_dtypes() -> None:
    assert codec.datatype_of(np.zeros(1, dtype=np.float16)) == "FP16"
    assert codec.datatype_of(np.array(["x"])) == "BYTES"
    with pytest.raises(TypeError, match="complex"):
        codec.datatype_of(np.zeros(1, dtype=np.complex64))


@pytest.mark.parametrize("model", ["echo", "typed"])
def test_every_datatype_round_trips(model: str) -> None:
    inputs = {name: array for name, array in ARRAYS.items() if model == "echo" or name != "FP16"}
    inputs["BYTES"] = np.array([[b"\x00\xff", b"hello"]], dtype=object)
    datatypes = {}
    if model == "echo":
        inputs["BF16"] = np.array([1.0, -0.5, 2.0**100], dtype=np.float32)
        datatypes["BF16"] = "BF16"
    with toy_server_in_thread() as (address, _), InferenceClient(address) as client:
        out = client.infer(model, inputs, datatypes=datatypes)
    assert set(out) == {f"OUT_{name}" for name in inputs}
    for name, array in inputs.items():
        got = out[f"OUT_{name}"]
        assert got.shape == array.shape, name
        if name == "BYTES":
            assert got.tolist() == array.tolist()
        else:
            np.testing.assert_array_equal(got, array.astype(got.dtype), err_msg=name)
            if name != "BF16":
                assert got.dtype == array.dtype, name


def test_sync_client_control_plane_and_errors() -> None:
    with toy_server_in_thread() as (address, _), InferenceClient(address) as client:
        assert client.is_server_live() and client.is_server_ready()
        assert client.server_metadata().name == "toy"
        metadata = client.model_metadata("simple")
        assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
            ("INPUT0", "INT32", [-1, 16]),
            ("INPUT1", "INT32", [-1, 16]),
        ]
        assert client.model_config("simple").max_batch_size == 8
        client.unload_model("echo")
        assert not client.is_model_ready("echo")
        assert "echo" not in [m.name for m in client.repository_index()]
        client.load_model("echo")
        assert client.is_model_ready("echo")

        a = np.arange(32, dtype=np.int32).reshape(2, 16)
        out = client.infer("simple", {"INPUT0": a, "INPUT1": a}, outputs=["OUTPUT0"])
        np.testing.assert_array_equal(out["OUTPUT0"], 2 * a)
        assert client.model_statistics("simple").model_stats[0].inference_count == 1

        with pytest.raises(ModelportClientError) as missing:
            client.infer("nope", {"INPUT0": a})
        assert missing.value.code == grpc.StatusCode.NOT_FOUND
        assert "nope" in missing.value.message
        with pytest.raises(ModelportClientError) as invalid:
            client.infer("simple", {"X": a})
        assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ModelportClientError) as late:  # the model sleeps 5 ms
            client.infer("slow", {"INPUT0": a, "INPUT1": a}, timeout=0.001)
        assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(ModelportClientError) as load_error:
            client.load_model("ghost")
        assert load_error.value.code == grpc.StatusCode.NOT_FOUND


def test_sync_streaming_yields_in_order_and_raises_stream_errors() -> None:
    a = np.ones((1, 16), dtype=np.int32)
    with toy_server_in_thread() as (address, _), InferenceClient(address) as client:
        results = list(
            client.stream_infer("simple", [{"INPUT0": a * i, "INPUT1": a} for i in (1, 2)])
        )
        assert [r["OUTPUT0"][0, 0] for r in results] == [2, 3]
        stream = client.stream_infer("simple", [{"INPUT0": a, "INPUT1": a}, {"BAD": a}])
        assert next(stream)["OUTPUT1"].sum() == 0
        with pytest.raises(ModelportClientError) as error:
            next(stream)
        assert error.value.code is None and "INPUT0/1" in error.value.message


async def test_async_client_infers_streams_and_maps_errors() -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    async with serve_toy() as (address, _), AsyncInferenceClient(address, timeout=5) as client:
        assert await client.is_server_ready()
        assert (await client.model_metadata("simple")).name == "simple"
        out = await client.infer("simple", {"INPUT0": a, "INPUT1": a})
        np.testing.assert_array_equal(out["OUTPUT1"], np.zeros_like(a))

        async def inputs():  # an async source, as a streaming caller would have
            for i in range(3):
                yield {"INPUT0": a + i, "INPUT1": a}

        sums = [r["OUTPUT0"][0, 1] async for r in client.stream_infer("simple", inputs())]
        assert sums == [2, 3, 4]
        with pytest.raises(ModelportClientError) as error:
            await client.model_metadata("echo")
        assert error.value.code == grpc.StatusCode.NOT_FOUND


async def test_unreachable_server_is_unavailable() -> None:
    async with serve_toy() as (address, _):
        pass  # the port is now closed
    async with AsyncInferenceClient(address, timeout=2) as client:
        with pytest.raises(ModelportClientError) as error:
            await client.is_server_live()
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
