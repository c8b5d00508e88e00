"""The id of a serialized ModelInferRequest that may be damaged.

A stream message that does not parse still gets an in-band error naming its
request, at the router and at the inference service alike.
"""

from __future__ import annotations

import contextlib


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def readable_id(message: bytes) -> str:
    """The id (field 3) of a ModelInferRequest that may be damaged: the last one
    complete before the damage ("" when there is none)."""
    request_id = b""
    pos, end = 0, len(message)
    with contextlib.suppress(IndexError):
        while pos < end:
            key, pos = _read_varint(message, pos)
            kind = key & 7
            if kind == 2:
                size, pos = _read_varint(message, pos)
                if key >> 3 == 3 and pos + size <= end:
                    request_id = message[pos : pos + size]
                pos += size
            elif kind in (0, 1, 5):
                pos = _read_varint(message, pos)[1] if kind == 0 else pos + (8 if kind == 1 else 4)
            else:
                break
    return request_id.decode(errors="replace")
