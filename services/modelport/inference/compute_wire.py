"""What a server process and its compute process exchange: framed headers over a
socketpair, tensors in a shared-memory segment.

A header is a 4-byte little-endian length and a JSON object. Tensors travel in
a shared segment, each described by [kind, dtype, shape, offset, nbytes]; one
that does not fit travels inline after the header (offset -1), and the segment
is grown for the next message. The segment is an anonymous memory file
(memfd; an unlinked temporary file where there is none) whose descriptor rides
on the frame that introduces it (SCM_RIGHTS): nothing has a name, nothing is
left behind when a process is killed.
BYTES tensors (numpy object arrays) are packed as Triton's raw BYTES encoding
(4-byte length, then the bytes, per element). The peer is our own child
process, so nothing here defends against a hostile writer beyond refusing
malformed frames.
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

LENGTH = struct.Struct("<I")
ALIGN = 64  # every tensor starts on a cache line
MAX_HEADER = 1 << 20


class PeerGone(Exception):
    """The other process closed its end (it exited or was killed)."""


class Segment:
    """Shared memory of `size` bytes, mapped here; `fd` is what the peer maps."""

    def __init__(self, size: int, fd: int | None = None) -> None:
        if fd is None:
            fd = _anonymous_file(size)
        self.fd = fd
        self.size = size
        self.map = mmap.mmap(fd, size)
        self.buffer = memoryview(self.map)

    def close(self) -> None:
        try:
            self.buffer.release()
            self.map.close()
        except BufferError:  # arrays still view it: the mapping goes with the last of them
            pass
        os.close(self.fd)


def _anonymous_file(size: int) -> int:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("modelport-compute", os.MFD_CLOEXEC)
    else:  # pragma: no cover - macOS
        fd, path = tempfile.mkstemp(prefix="modelport-compute-")
        os.unlink(path)
    os.ftruncate(fd, size)
    return fd


def send_frame(
    sock: socket.socket,
    header: dict[str, Any],
    payloads: Sequence[bytes] = (),
    segment: Segment | None = None,
) -> None:
    """One frame; `segment` sends its descriptor along (the peer maps it)."""
    body = json.dumps(header, separators=(",", ":")).encode()
    prefix = LENGTH.pack(len(body))
    if segment is not None:
        socket.send_fds(sock, [prefix], [segment.fd])
        sock.sendall(body)
    else:
        sock.sendall(prefix + body)
    for payload in payloads:
        sock.sendall(payload)


def _read_exact(sock: socket.socket, size: int) -> bytearray:
    out = bytearray(size)
    view = memoryview(out)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise PeerGone("compute channel closed")
        got += n
    return out


def recv_frame(sock: socket.socket) -> tuple[dict[str, Any], int | None]:
    """(header, descriptor sent along or None)."""
    prefix, fds, _flags, _addr = socket.recv_fds(sock, LENGTH.size, 1)
    if not prefix:
        raise PeerGone("compute channel closed")
    if len(prefix) < LENGTH.size:
        prefix += bytes(_read_exact(sock, LENGTH.size - len(prefix)))
    (size,) = LENGTH.unpack(prefix)
    if size > MAX_HEADER:
        raise PeerGone(f"compute channel sent a {size}-byte header")
    header: dict[str, Any] = json.loads(bytes(_read_exact(sock, size)))
    return header, (fds[0] if fds else None)


def recv_inline(sock: socket.socket, nbytes: int) -> bytearray:
    return _read_exact(sock, nbytes)


def pack_bytes(array: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for value in array.flat:
        data = value if isinstance(value, bytes) else str(value).encode()
        parts.append(LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def unpack_bytes(data: bytes | memoryview, shape: Sequence[int]) -> np.ndarray:
    count = prod(shape)
    out = np.empty(count, dtype=np.object_)
    raw = bytes(data)
    offset = 0
    for i in range(count):
        (length,) = LENGTH.unpack_from(raw, offset)
        offset += LENGTH.size
        out[i] = raw[offset : offset + length]
        offset += length
    return out.reshape(tuple(shape))


def aligned(size: int) -> int:
    return (size + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Placement:
    """Where each tensor of a message goes: descriptors for the header, what to copy
    into the segment (offset, array or packed BYTES), what to send inline."""

    described: list[list[Any]] = field(default_factory=list)
    copies: list[tuple[int, np.ndarray | bytes]] = field(default_factory=list)
    inline: list[bytes] = field(default_factory=list)
    end: int = 0

    def write(self, buffer: memoryview) -> None:
        for offset, data in self.copies:
            if isinstance(data, bytes):
                buffer[offset : offset + len(data)] = data
            else:
                target = np.ndarray(data.shape, data.dtype, buffer=buffer, offset=offset)
                np.copyto(target, data, casting="no")


def place(arrays: Sequence[np.ndarray], start: int, capacity: int) -> Placement:
    """Lay `arrays` out from offset `start` in a segment of `capacity` bytes; what
    does not fit goes inline (offset -1). `end` is where the next tensor could go."""
    placement = Placement(end=start)
    for array in arrays:
        data: np.ndarray | bytes
        if array.dtype == np.object_:
            data = pack_bytes(array)
            kind, dtype, nbytes = "bytes", "", len(data)
        else:
            data, kind, dtype, nbytes = array, "array", array.dtype.str, array.nbytes
        offset = placement.end
        if offset + nbytes <= capacity:
            placement.copies.append((offset, data))
            placement.end = aligned(offset + nbytes)
        else:
            offset = -1
            placement.inline.append(
                data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()
            )
        placement.described.append([kind, dtype, list(array.shape), offset, nbytes])
    return placement


def needed(arrays: Sequence[np.ndarray]) -> int:
    """Segment bytes for `arrays` laid out from 0 (BYTES counted as packed)."""
    total = 0
    for array in arrays:
        size = len(pack_bytes(array)) if array.dtype == np.object_ else array.nbytes
        total = aligned(total + size)
    return total


def read(
    buffer: memoryview | None,
    described: Sequence[Sequence[Any]],
    inline: Sequence[bytearray],
    copy: bool,
) -> list[np.ndarray]:
    """The arrays a header describes: views of the segment (copy=False) or copies."""
    out: list[np.ndarray] = []
    pending = iter(inline)
    for kind, dtype, shape, offset, nbytes in described:
        data: Any = next(pending) if offset < 0 else buffer[offset : offset + nbytes]  # type: ignore[index]
        if kind == "bytes":
            out.append(unpack_bytes(data, shape))
            continue
        array = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(tuple(shape))
        out.append(array.copy() if copy and offset >= 0 else array)
    return out
