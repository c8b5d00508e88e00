"""The sealed-blob format: a blob encrypted in authenticated chunks.

    header   "MPSEAL\\0\\1" | chunk size (u32, big-endian) | nonce prefix (7 random bytes)
    chunk i  AES-GCM(data key, nonce = prefix | i (u32) | last (1 byte), aad = header)

Every chunk holds `chunk size` bytes of plaintext plus a 16-byte tag, except
the last, which holds 0..chunk size and is sealed with last = 1. That is the
STREAM construction: a chunk cannot be altered, moved, dropped or taken from
another blob, and the blob cannot be cut short at a chunk boundary, without
a tag failing. A blob is written and read in bounded memory (one chunk), and
`SealedReader` gives seekable random access to the plaintext, so loaders
(tarfile, torch.export.load, torch.jit.load) read a model straight from the
encrypted file and no plaintext ever touches the disk.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from modelport.errors import DataLoss, InvalidInput

MAGIC = b"MPSEAL\x00\x01"
_HEADER = struct.Struct(">8sI7s")
HEADER_BYTES = _HEADER.size
TAG_BYTES = 16
DEFAULT_CHUNK_BYTES = 1 << 20
MIN_CHUNK_BYTES, MAX_CHUNK_BYTES = 1 << 10, 1 << 24


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= 1 << 32:
        raise InvalidInput("a sealed blob holds at most 2^32 chunks")
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def sealed_size(plaintext_bytes: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    chunks = max(1, -(-plaintext_bytes // chunk_bytes))
    return HEADER_BYTES + plaintext_bytes + chunks * TAG_BYTES


class SealingWriter:
    """File-like: plaintext written in, a sealed blob written out to `sink`.

    `close()` seals the last chunk; a writer never closed leaves a blob that
    fails verification (it has no last chunk), never one that reads short.
    """

    def __init__(
        self, sink: Writable, data_key: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> None:
        if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise InvalidInput(f"chunk size must be {MIN_CHUNK_BYTES}..{MAX_CHUNK_BYTES} bytes")
        self._sink = sink
        self._aead = AESGCM(data_key)
        self.chunk_bytes = chunk_bytes
        self._prefix = os.urandom(7)
        self._header = _HEADER.pack(MAGIC, chunk_bytes, self._prefix)
        self._buffer = bytearray()
        self._index = 0
        self.closed = False
        self.plaintext_bytes = 0
        self.sealed_bytes = len(self._header)
        sink.write(self._header)

    def _emit(self, last: bool) -> None:
        nonce = _nonce(self._prefix, self._index, last)
        sealed = self._aead.encrypt(nonce, bytes(self._buffer), self._header)
        self._sink.write(sealed)
        self.sealed_bytes += len(sealed)
        self._index += 1
        self._buffer.clear()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.closed:
            raise ValueError("write to a closed SealingWriter")
        view = memoryview(data).cast("B")
        written = len(view)
        while view:
            room = self.chunk_bytes - len(self._buffer)
            if room == 0:
                # A full chunk with more after it: it is not the last one.
                self._emit(last=False)
                continue
            self._buffer += view[:room]
            view = view[room:]
        self.plaintext_bytes += written
        return written

    def close(self) -> None:
        if not self.closed:
            self._emit(last=True)
            self.closed = True

    def __enter__(self) -> SealingWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()


def seal_chunks(
    chunks: Iterable[bytes], data_key: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[bytes]:
    """A sealed blob as a stream of byte strings, from a stream of plaintext ones."""
    out: list[bytes] = []
    writer = SealingWriter(_ListSink(out), data_key, chunk_bytes)
    for chunk in chunks:
        writer.write(chunk)
        yield from out
        out.clear()
    writer.close()
    yield from out


class _ListSink:
    def __init__(self, out: list[bytes]) -> None:
        self.out = out

    def write(self, data: bytes) -> int:
        self.out.append(data)
        return len(data)


def _parse_header(header: bytes) -> tuple[int, bytes]:
    if len(header) < HEADER_BYTES:
        raise DataLoss("sealed blob is truncated (no complete header)")
    magic, chunk_bytes, prefix = _HEADER.unpack(header[:HEADER_BYTES])
    if magic != MAGIC:
        raise DataLoss("not a sealed blob (bad magic), or not one this version reads")
    if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise DataLoss(f"sealed blob header names an impossible chunk size {chunk_bytes}")
    return chunk_bytes, prefix


def _open(
    aead: AESGCM, header: bytes, prefix: bytes, index: int, last: bool, sealed: bytes
) -> bytes:
    try:
        return aead.decrypt(_nonce(prefix, index, last), sealed, header)
    except InvalidTag:
        raise DataLoss(f"sealed blob chunk {index} failed its integrity check") from None


def unseal_chunks(chunks: Iterable[bytes], data_key: bytes) -> Iterator[bytes]:
    """The plaintext of a sealed blob arriving as a stream (no seeking needed).

    One chunk is held back until more bytes arrive, since only the end of the
    stream tells which chunk is the last.
    """
    aead = AESGCM(data_key)
    pending = bytearray()
    header = b""
    prefix = b""
    step = 0
    index = 0
    for piece in chunks:
        pending += piece
        if not header:
            if len(pending) < HEADER_BYTES:
                continue
            header = bytes(pending[:HEADER_BYTES])
            chunk_bytes, prefix = _parse_header(header)
            step = chunk_bytes + TAG_BYTES
            del pending[:HEADER_BYTES]
        while len(pending) > step:
            yield _open(aead, header, prefix, index, False, bytes(pending[:step]))
            del pending[:step]
            index += 1
    if not header:
        raise DataLoss("sealed blob is truncated (no complete header)")
    if len(pending) < TAG_BYTES:
        raise DataLoss("sealed blob is truncated (no last chunk)")
    yield _open(aead, header, prefix, index, True, bytes(pending))


class SealedReader(io.RawIOBase):
    """Seekable, read-only plaintext of a sealed blob in a seekable binary file.

    Decrypts the chunk a read lands in (and keeps that one chunk), so memory
    stays at one chunk whatever the blob's size. Wrap it in io.BufferedReader
    (`open_sealed` does) for efficient small reads.
    """

    def __init__(self, source: BinaryIO, data_key: bytes, owns_source: bool = False) -> None:
        super().__init__()
        self._source = source
        self._owns_source = owns_source
        self._aead = AESGCM(data_key)
        source.seek(0)
        self._header = source.read(HEADER_BYTES)
        self.chunk_bytes, self._prefix = _parse_header(self._header)
        body = source.seek(0, os.SEEK_END) - HEADER_BYTES
        step = self.chunk_bytes + TAG_BYTES
        self.chunk_count = max(1, -(-body // step))
        last_sealed = body - (self.chunk_count - 1) * step
        if last_sealed < TAG_BYTES:
            raise DataLoss("sealed blob is truncated (no last chunk)")
        self.size = body - self.chunk_count * TAG_BYTES
        self._position = 0
        self._cached: tuple[int, bytes] | None = None

    def chunk(self, index: int) -> bytes:
        """The plaintext of chunk `index`, verified."""
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        step = self.chunk_bytes + TAG_BYTES
        self._source.seek(HEADER_BYTES + index * step)
        sealed = self._source.read(step)
        last = index == self.chunk_count - 1
        plain = _open(self._aead, self._header, self._prefix, index, last, sealed)
        self._cached = (index, plain)
        return plain

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._position >= self.size:
            return 0
        index, offset = divmod(self._position, self.chunk_bytes)
        plain = self.chunk(index)
        count = min(len(buffer), len(plain) - offset)
        buffer[:count] = plain[offset : offset + count]
        self._position += count
        return count

    def close(self) -> None:
        self._cached = None
        if self._owns_source:
            self._source.close()
        super().close()


def open_sealed(source: BinaryIO | str | os.PathLike[str], data_key: bytes) -> io.BufferedReader:
    """A buffered, seekable reader of the plaintext; given a path, it owns the file."""
    if isinstance(source, (str, os.PathLike)):
        file = open(source, "rb")  # noqa: SIM115 (the reader closes it)
        try:
            reader = SealedReader(file, data_key, owns_source=True)
        except BaseException:
            file.close()
            raise
    else:
        reader = SealedReader(source, data_key)
    return io.BufferedReader(reader, buffer_size=reader.chunk_bytes)


def verify_sealed(source: BinaryIO, data_key: bytes) -> int:
    """Read every chunk (raising DataLoss on the first bad one); the plaintext size."""
    reader = SealedReader(source, data_key)
    for index in range(reader.chunk_count):
        reader.chunk(index)
    return reader.size
