"""Edits on serialized protobuf messages, without decoding them.

The router forwards requests and answers as the bytes it received. When a
policy picks another version (or an ensemble another model), the field is
appended rather than the message re-encoded: for a singular field the last
occurrence on the wire wins, so `request + field` is the edited request.
"""

from __future__ import annotations

from collections.abc import Iterator

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


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def routing_fields(request: bytes) -> tuple[str, str, str]:
    """(model_name, model_version, id) of a serialized ModelInferRequest."""
    model, version, request_id, _ = request_routing(request)
    return model, version, request_id


def request_routing(request: bytes) -> tuple[str, str, str, str]:
    """(model_name, model_version, id, sequence key) of a serialized ModelInferRequest.

    The sequence key is the request's `sequence_id` parameter as text ("" when it
    has none, or it is 0 or "").
    """
    model = version = request_id = b""
    sequence = ""
    try:
        for field, payload in top_level_fields(request):
            if field == 1:
                model = payload
            elif field == 2:
                version = payload
            elif field == 3:
                request_id = payload
            elif field == PARAMETERS_FIELD:
                sequence = _sequence_entry(payload) or sequence
        return model.decode(), version.decode(), request_id.decode(), sequence
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed ModelInferRequest: {exc}") from None


def top_level_fields(message: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, payload) of each length-delimited top-level field, in wire order.

    Tensors are jumped over as slices, not parsed; varint and fixed-size fields are
    skipped. Later occurrences of a field win, as in a full parse, so callers keep
    the last one. A truncated message or a group raises ValueError (or IndexError).
    """
    pos, end = 0, len(message)
    while pos < end:
        key, pos = _read_varint(message, pos)
        wire_type = key & 7
        if wire_type == 2:
            size, pos = _read_varint(message, pos)
            if pos + size > end:
                raise ValueError("truncated message")
            yield key >> 3, message[pos : pos + size]
            pos += size
        elif wire_type == 0:
            _, pos = _read_varint(message, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
    if pos != end:
        raise ValueError("truncated message")


SEQUENCE_ID = b"sequence_id"


def _sequence_entry(entry: bytes) -> str:
    """The value of a `parameters` map entry when its key is sequence_id, else ""."""
    key = value = b""
    pos, end = 0, len(entry)
    while pos < end:
        tag, pos = _read_varint(entry, pos)
        if tag & 7 != 2:
            return ""
        size, pos = _read_varint(entry, pos)
        if tag >> 3 == 1:
            key = entry[pos : pos + size]
        elif tag >> 3 == 2:
            value = entry[pos : pos + size]
        pos += size
    if key != SEQUENCE_ID or not value:
        return ""
    # InferParameter: int64_param = 2 and uint64_param = 5 (varints), string_param = 3.
    tag, pos = _read_varint(value, 0)
    if tag in (0x10, 0x28):
        number, _ = _read_varint(value, pos)
        return str(number) if number else ""
    if tag == 0x1A:
        size, pos = _read_varint(value, pos)
        return value[pos : pos + size].decode()
    return ""


def stream_parts(message: bytes) -> tuple[str, bytes]:
    """(error_message, infer_response bytes) of a serialized ModelStreamInferResponse."""
    error, answer = stream_parts_raw(message)
    return error.decode(errors="replace"), answer


PARAMETERS_FIELD = 4  # ModelInferRequest.parameters / ModelInferResponse.parameters
OUTPUTS_FIELD = 5  # ModelInferResponse.outputs
BOOL_TRUE = b"\x08\x01"  # InferParameter.bool_param = 1, true


def parameter_entry(name: str, value: bytes) -> bytes:
    """A `parameters` map entry (name -> serialized InferParameter), to append."""
    entry = length_delimited(b"\x0a", name.encode()) + length_delimited(b"\x12", value)
    return length_delimited(b"\x22", entry)


def parameters(message: bytes, *names: str) -> tuple[str, dict[str, bytes], bool]:
    """(id, {name: serialized InferParameter} of the `names` present, whether it has
    outputs) of a serialized ModelInferRequest or ModelInferResponse; later entries
    win, as in a full parse."""
    request_id = b""
    found: dict[str, bytes] = {}
    wanted = {name.encode(): name for name in names}
    outputs = False
    try:
        for field, payload in top_level_fields(message):
            if field == 3:
                request_id = payload
            elif field == PARAMETERS_FIELD:
                name, value = _map_entry(payload)
                if name in wanted:
                    found[wanted[name]] = value
            elif field == OUTPUTS_FIELD:
                outputs = True
        return request_id.decode(), found, outputs
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed message: {exc}") from None


def _map_entry(entry: bytes) -> tuple[bytes, bytes]:
    """(key, value) of a serialized map entry with length-delimited key and value."""
    key = value = b""
    pos, end = 0, len(entry)
    while pos < end:
        tag, pos = _read_varint(entry, pos)
        if tag & 7 != 2:
            return b"", b""
        size, pos = _read_varint(entry, pos)
        if tag >> 3 == 1:
            key = entry[pos : pos + size]
        elif tag >> 3 == 2:
            value = entry[pos : pos + size]
        pos += size
    return key, value


def bool_param(value: bytes | None) -> bool | None:
    """A serialized InferParameter as a bool (None: absent; a false one is empty)."""
    return None if value is None else value == BOOL_TRUE


def string_param(value: bytes | None) -> str:
    """The string_param (field 3) of a serialized InferParameter, else ""."""
    if not value or value[:1] != b"\x1a":
        return ""
    size, pos = _read_varint(value, 1)
    return value[pos : pos + size].decode(errors="replace")


def stream_parts_raw(message: bytes) -> tuple[bytes, bytes]:
    """(error_message bytes, infer_response bytes) of a ModelStreamInferResponse."""
    error = answer = b""
    pos, end = 0, len(message)
    while pos < end:
        key, pos = _read_varint(message, pos)
        if key & 7 != 2:
            raise ValueError("unexpected field in ModelStreamInferResponse")
        size, pos = _read_varint(message, pos)
        if key >> 3 == 1:
            error = message[pos : pos + size]
        elif key >> 3 == 2:
            answer = message[pos : pos + size]
        pos += size
    return error, answer
