"""Edits on serialized protobuf messages, without decoding them.

The router forwards requests and answers as the bytes it received. When a
policy picks another version (or an ensemble another model), the field is
appended rather than the message re-encoded: for a singular field the last
occurrence on the wire wins, so `request + field` is the edited request.
"""

from __future__ import annotations

from modelport.common.wire import read_varint, routing_fields

__all__ = ["length_delimited", "retarget", "routing_fields", "stream_error", "stream_parts",
           "stream_response", "varint"]  # fmt: skip

# Field tags (field_number << 3 | wire type 2, length-delimited).
MODEL_NAME_TAG = b"\x0a"  # ModelInferRequest.model_name = 1
MODEL_VERSION_TAG = b"\x12"  # ModelInferRequest.model_version = 2
STREAM_ERROR_TAG = b"\x0a"  # ModelStreamInferResponse.error_message = 1
STREAM_RESPONSE_TAG = b"\x12"  # ModelStreamInferResponse.infer_response = 2


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def retarget(request: bytes, model: str | None = None, version: str | None = None) -> bytes:
    """`request` with model_name and/or model_version replaced."""
    tail = b""
    if model is not None:
        tail += length_delimited(MODEL_NAME_TAG, model.encode())
    if version is not None:
        tail += length_delimited(MODEL_VERSION_TAG, version.encode())
    return request + tail


def stream_response(infer_response: bytes) -> bytes:
    """A ModelStreamInferResponse that wraps an already serialized answer."""
    return length_delimited(STREAM_RESPONSE_TAG, infer_response)


def stream_error(message: str, infer_response: bytes) -> bytes:
    """A ModelStreamInferResponse that reports a failed request."""
    return length_delimited(STREAM_ERROR_TAG, message.encode()) + length_delimited(
        STREAM_RESPONSE_TAG, infer_response
    )


def stream_parts(message: bytes) -> tuple[str, bytes]:
    """(error_message, infer_response bytes) of a serialized ModelStreamInferResponse."""
    error = b""
    answer = b""
    pos, end = 0, len(message)
    while pos < end:
        key, pos = read_varint(message, pos)
        if key & 7 != 2:
            raise ValueError("unexpected field in ModelStreamInferResponse")
        size, pos = read_varint(message, pos)
        if key >> 3 == 1:
            error = message[pos : pos + size]
        elif key >> 3 == 2:
            answer = message[pos : pos + size]
        pos += size
    return error.decode(errors="replace"), answer
