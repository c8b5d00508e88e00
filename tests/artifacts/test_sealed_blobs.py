"""Sealed blobs: round trips in bounded memory, random access, and every way of
tampering with the file detected."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import pytest
from modelport.artifacts.keyring import new_key
from modelport.artifacts.sealed_blobs import (
    HEADER_BYTES,
    TAG_BYTES,
    SealedReader,
    SealingWriter,
    open_sealed,
    seal_chunks,
    sealed_size,
    unseal_chunks,
    verify_sealed,
)
from modelport.errors import DataLoss, InvalidInput

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

CHUNK = 4096
KEY = new_key()


def seal(plain: bytes, key: bytes = KEY, chunk: int = CHUNK) -> bytes:
    out = io.BytesIO()
    with SealingWriter(out, key, chunk) as writer:
        for start in range(0, len(plain), 1000):  # writes that straddle chunk edges
            writer.write(plain[start : start + 1000])
    return out.getvalue()


def unseal(sealed: bytes, key: bytes = KEY) -> bytes:
    with open_sealed(io.BytesIO(sealed), key) as reader:
        return reader.read()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 17])
def test_round_trips_at_every_chunk_edge(size: int) -> None:
    plain = os.urandom(size)
    sealed = seal(plain)
    assert len(sealed) == sealed_size(size, CHUNK)
    assert unseal(sealed) == plain
    assert (
        b"".join(unseal_chunks([sealed[i : i + 777] for i in range(0, len(sealed), 777)], KEY))
        == plain
    )
    assert b"".join(seal_chunks([plain], KEY, CHUNK))[:8] == sealed[:8]
    assert (
        b"".join(unseal_chunks(seal_chunks(iter([plain[:5], plain[5:]]), KEY, CHUNK), KEY)) == plain
    )
    assert verify_sealed(io.BytesIO(sealed), KEY) == size


def test_the_ciphertext_shows_nothing_of_the_plaintext() -> None:
    plain = b"weights of a private model " * 1000
    sealed = seal(plain)
    assert b"private model" not in sealed
    assert seal(plain) != sealed  # fresh nonce prefix every time, even under the same key


def test_random_access_reads_match_the_plaintext() -> None:
    plain = os.urandom(7 * CHUNK + 123)
    reader = open_sealed(io.BytesIO(seal(plain)), KEY)
    for offset, count in [
        (0, 10),
        (CHUNK - 3, 10),
        (5 * CHUNK, 2 * CHUNK),
        (len(plain) - 5, 50),
        (len(plain) + 10, 5),
        (17, 0),
    ]:
        reader.seek(offset)
        assert reader.read(count) == plain[offset : offset + count]
    reader.seek(-4, os.SEEK_END)
    assert reader.read() == plain[-4:] and reader.tell() == len(plain)


def tamper(sealed: bytes, where: str) -> bytes:
    step = CHUNK + TAG_BYTES
    data = bytearray(sealed)
    if where == "header":
        data[9] ^= 1  # the chunk size
    elif where == "nonce prefix":
        data[HEADER_BYTES - 1] ^= 1
    elif where == "body":
        data[HEADER_BYTES + step + 100] ^= 1
    elif where == "tag":
        data[HEADER_BYTES + step - 1] ^= 1
    elif where == "truncated at a chunk edge":
        return bytes(data[: HEADER_BYTES + 2 * step])
    elif where == "truncated mid-chunk":
        return bytes(data[: HEADER_BYTES + 2 * step + 50])
    elif where == "chunks swapped":
        first, second = (
            data[HEADER_BYTES : HEADER_BYTES + step],
            data[HEADER_BYTES + step : HEADER_BYTES + 2 * step],
        )
        data[HEADER_BYTES : HEADER_BYTES + 2 * step] = second + first
    elif where == "appended":
        return bytes(data) + os.urandom(CHUNK + TAG_BYTES)
    elif where == "chunk from another blob":
        other = seal(os.urandom(len(sealed)))
        data[HEADER_BYTES : HEADER_BYTES + step] = other[HEADER_BYTES : HEADER_BYTES + step]
    elif where == "magic":
        data[0] ^= 1
    elif where == "empty":
        return b""
    return bytes(data)


@pytest.mark.parametrize(
    "where",
    [
        "header",
        "nonce prefix",
        "body",
        "tag",
        "truncated at a chunk edge",
        "truncated mid-chunk",
        "chunks swapped",
        "appended",
        "chunk from another blob",
        "magic",
        "empty",
    ],
)
def test_tampering_is_detected_however_it_is_read(where: str) -> None:
    sealed = tamper(seal(os.urandom(4 * CHUNK + 10)), where)
    with pytest.raises(DataLoss):
        unseal(sealed)
    with pytest.raises(DataLoss):
        b"".join(unseal_chunks([sealed], KEY))
    with pytest.raises(DataLoss):
        verify_sealed(io.BytesIO(sealed), KEY)


def test_the_wrong_key_is_detected() -> None:
    with pytest.raises(DataLoss, match="chunk 0 failed its integrity check"):
        unseal(seal(b"x" * 10), new_key())


def test_an_unclosed_writer_leaves_a_blob_that_does_not_verify() -> None:
    out = io.BytesIO()
    writer = SealingWriter(out, KEY, CHUNK)
    writer.write(os.urandom(3 * CHUNK))  # the writer dies here: no last chunk sealed
    with pytest.raises(DataLoss):
        verify_sealed(io.BytesIO(out.getvalue()), KEY)


def test_chunk_sizes_are_bounded() -> None:
    with pytest.raises(InvalidInput):
        SealingWriter(io.BytesIO(), KEY, 10)
    with pytest.raises(InvalidInput):
        SealingWriter(io.BytesIO(), KEY, 1 << 30)


def test_large_blobs_stream_through_in_bounded_memory(tmp_path: Path) -> None:
    """32 MiB sealed and read back while Python never holds more than a few chunks."""
    chunk = 1 << 20
    piece = os.urandom(chunk // 2)
    path = tmp_path / "blob.sealed"
    tracemalloc.start()
    try:
        with path.open("wb") as f, SealingWriter(f, KEY, chunk) as writer:
            for _ in range(64):
                writer.write(piece)
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with open_sealed(path, KEY) as reader:
            total = 0
            while block := reader.read(chunk // 4):
                total += len(block)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 32 * chunk
    assert write_peak < 6 * chunk and read_peak < 6 * chunk, (write_peak, read_peak)


def test_a_reader_given_a_path_closes_its_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.sealed"
    path.write_bytes(seal(b"abc"))
    reader = open_sealed(path, KEY)
    raw = reader.raw
    assert isinstance(raw, SealedReader)
    reader.close()
    assert raw.closed and raw._source.closed
