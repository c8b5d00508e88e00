"""Reading the routing fields of a serialized ModelInferRequest without decoding it.

The router routes on these fields and forwards the bytes untouched; the
inference service reads the id of a stream message that does not parse, so
its in-band error still names the request.
"""

from __future__ import annotations

import contextlib


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def routing_fields(request: bytes) -> tuple[str, str, str]:
    """(model_name, model_version, id) of a serialized ModelInferRequest.

    Walks the top-level fields only, jumping over tensors and parameters
    without copying them; later occurrences win, as in a full parse.
    """
    model = version = request_id = b""
    pos, end = 0, len(request)
    try:
        while pos < end:
            key, pos = read_varint(request, pos)
            wire_type = key & 7
            if wire_type == 2:
                size, pos = read_varint(request, pos)
                field = key >> 3
                if field == 1:
                    model = request[pos : pos + size]
                elif field == 2:
                    version = request[pos : pos + size]
                elif field == 3:
                    request_id = request[pos : pos + size]
                pos += size
            elif wire_type == 0:
                _, pos = read_varint(request, pos)
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            else:
                raise ValueError(f"unsupported wire type {wire_type}")
        if pos != end:
            raise ValueError("truncated message")
        return model.decode(), version.decode(), request_id.decode()
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed ModelInferRequest: {exc}") from None


def readable_id(message: bytes) -> str:
    """The id of a ModelInferRequest that may be damaged: the last one complete before
    the damage ("" when there is none), so an error still names its request."""
    request_id = b""
    pos, end = 0, len(message)
    with contextlib.suppress(IndexError):
        while pos < end:
            key, pos = read_varint(message, pos)
            kind = key & 7
            if kind == 2:
                size, pos = read_varint(message, pos)
                if key >> 3 == 3 and pos + size <= end:
                    request_id = message[pos : pos + size]
                pos += size
            elif kind in (0, 1, 5):
                pos = read_varint(message, pos)[1] if kind == 0 else pos + (8 if kind == 1 else 4)
            else:
                break
    return request_id.decode(errors="replace")
