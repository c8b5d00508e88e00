"""Sealed files on disk: a sealed blob beside its wrapped data key.

    <name>        the blob, sealed (see `sealed_blobs`)
    <name>.key    its data key wrapped under a KEK (`WrappedKey.to_text()`)

The registry's blob store and the inference service's artifact cache both keep
files this way. The key sits beside the blob, not inside it, so a KEK rotation
rewrites only the small `.key` files (atomically), never a blob. A writer hashes
the plaintext as it seals it, so content addressing and integrity checks still
speak of the plaintext's sha256.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from modelport.artifacts.keyring import Keyring, WrappedKey
from modelport.artifacts.sealed_blobs import (
    DEFAULT_CHUNK_BYTES,
    MAGIC,
    SealingWriter,
    open_sealed,
)
from modelport.errors import DataLoss, FailedPrecondition

KEY_SUFFIX = ".key"


def key_path(path: Path) -> Path:
    return path.with_name(path.name + KEY_SUFFIX)


def is_sealed(path: Path) -> bool:
    """Whether the file starts as a sealed blob does (plaintext files from before
    encryption was turned on still read as they are)."""
    with path.open("rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


class SealedFileWriter:
    """Plaintext in, `<path>` sealed and `<path>.key` out; sha256 of the plaintext."""

    def __init__(self, path: Path, keyring: Keyring, chunk_bytes: int) -> None:
        self.path = path
        data_key, self._wrapped = keyring.new_data_key()
        self._file = path.open("xb")
        self._writer = SealingWriter(self._file, data_key, chunk_bytes)
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._digest.update(data)
        self._writer.write(data)
        self.size += len(data)

    def finish(self) -> str:
        """Seal the last chunk, make both files durable; the plaintext's sha256 (hex)."""
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        _write_atomically(key_path(self.path), self._wrapped.to_text())
        return self._digest.hexdigest()

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)
        key_path(self.path).unlink(missing_ok=True)


class SealedFiles:
    """Seal, open, move and re-wrap sealed files under the keyring in force."""

    def __init__(
        self, keyring: Callable[[], Keyring], chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> None:
        self.keyring = keyring
        self.chunk_bytes = chunk_bytes

    def create(self, path: Path) -> SealedFileWriter:
        return SealedFileWriter(path, self.keyring(), self.chunk_bytes)

    def seal(self, plain: Path, sealed: Path) -> str:
        """Seal the file `plain` as `sealed` (+ key); the plaintext's sha256."""
        writer = self.create(sealed)
        try:
            with plain.open("rb") as f:
                while block := f.read(self.chunk_bytes):
                    writer.write(block)
            return writer.finish()
        except BaseException:
            writer.discard()
            raise

    def data_key(self, sealed: Path) -> bytes:
        try:
            text = key_path(sealed).read_text()
        except FileNotFoundError:
            raise DataLoss(f"{sealed.name}: sealed, but its key file is missing") from None
        return self.keyring().unwrap(WrappedKey.from_text(text.strip()))

    def open(self, sealed: Path) -> io.BufferedReader:
        """A seekable reader of the plaintext, decrypting as it reads."""
        return open_sealed(sealed, self.data_key(sealed))

    def chunks(self, sealed: Path, chunk_bytes: int) -> Iterator[bytes]:
        with self.open(sealed) as reader:
            while block := reader.read(chunk_bytes):
                yield block

    def sha256(self, sealed: Path) -> str:
        """Decrypt and hash the whole plaintext (every chunk verified on the way)."""
        digest = hashlib.sha256()
        for block in self.chunks(sealed, self.chunk_bytes):
            digest.update(block)
        return digest.hexdigest()

    def rewrap(self, sealed: Path) -> bool:
        """Wrap the file's data key under the active KEK; True if the key file changed."""
        path = key_path(sealed)
        wrapped = WrappedKey.from_text(path.read_text().strip())
        rewrapped = self.keyring().rewrap(wrapped)
        if rewrapped is wrapped:
            return False
        _write_atomically(path, rewrapped.to_text())
        return True


def move(temp: Path, final: Path) -> None:
    """Rename a sealed file and its key into place: the key first, so a blob under
    its final name always has one (a key left alone by a crash is swept)."""
    if key_path(temp).exists():
        os.replace(key_path(temp), key_path(final))
    os.replace(temp, final)


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    key_path(path).unlink(missing_ok=True)


def require_keyring(files: SealedFiles | None, path: Path) -> SealedFiles:
    if files is None:
        raise FailedPrecondition(
            f"{path.name} is encrypted and this service has no key-encryption key "
            "(start it with --kek-file)"
        )
    return files
