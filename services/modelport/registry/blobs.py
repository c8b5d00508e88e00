"""Content-addressed blob storage: local staging, then a backend (filesystem or S3).

Blobs are named `sha256/<ab>/<sha256>`. An upload is written to `<root>/tmp/`
on local disk, checked, made durable, and only then handed to the backend
(`blob_backends`): the filesystem renames it into place (fsynced), S3
completes a multipart upload; either way nothing is visible under a blob's
name before it is whole. `tmp/` holds only uploads in progress; abandoned
ones are swept.

Placement and deletion run under the store's write lock, so a blob that a new
version is about to reuse cannot vanish in between. On S3 the upload itself
happens before the lock (`stage`, it may take minutes) and `place` only checks,
under the lock, that the object is still there (uploading it again if a
concurrent deletion took it). Blobs staged but not yet recorded look
unreferenced for that while, so on S3 the sweep of unreferenced blobs spares
objects younger than the stale-upload period.

With a keyring (`--kek-file`), `make_durable` seals an upload before it leaves
the scratch dir: the backend keeps the ciphertext under the blob's name and its
wrapped data key as `<name>.key` (see `artifacts.sealed_files`), the key stored
first so a blob always has one. Reads decrypt on the fly, on any backend. The
name stays the sha256 of the plaintext. Blobs stored before encryption was
turned on still read as they are, until `seal_plaintext` encrypts them; a KEK
rotation (`rewrap`) rewrites only the `.key` objects.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from modelport.artifacts import sealed_files
from modelport.artifacts.hashing import check_sha256
from modelport.artifacts.keyring import WrappedKey
from modelport.artifacts.sealed_blobs import MAGIC as SEALED_MAGIC
from modelport.artifacts.sealed_blobs import unseal_chunks
from modelport.artifacts.sealed_files import KEY_SUFFIX, SealedFiles, key_path, require_keyring
from modelport.errors import DataLoss, Internal, InvalidInput, NotFound
from modelport.registry.blob_backends import BlobBackend, FileBackend

log = logging.getLogger(__name__)

PREFIX = "sha256"


class UploadSink:
    """Bytes of one upload on their way to a temp file, hashed and size-limited as they come."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.size = 0
        self._digest = hashlib.sha256()
        self._file = path.open("xb")

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise InvalidInput(
                f"upload is larger than the limit of {self.max_bytes} bytes (--max-upload-mb)"
            )
        self._digest.update(data)
        self._file.write(data)

    def finish(self) -> str:
        """Close the file; returns the sha256 (hex) of what was written."""
        self._file.close()
        return self._digest.hexdigest()

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class BlobStore:
    def __init__(
        self,
        root: Path | str,
        backend: BlobBackend | None = None,
        stale_upload_seconds: float = 3600.0,
        *,
        sealing: SealedFiles | None = None,
        scratch: Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.sealing = sealing
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        # Where plaintext lives while an upload is checked. With encryption on it
        # may be elsewhere (a memory-backed volume), since only sealed files go
        # to the backend; without, it must be tmp/ for the filesystem's rename.
        self.scratch = Path(scratch) if scratch is not None and sealing is not None else self.tmp
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.backend: BlobBackend = backend or FileBackend(self.root)
        # How long a blob uploaded outside the lock may wait for its row (see module doc).
        self.unreferenced_grace = 0.0 if self.backend.moves_local else stale_upload_seconds

    def name(self, sha256: str) -> str:
        check_sha256(sha256)
        return f"{PREFIX}/{sha256[:2]}/{sha256}"

    def temp_path(self, suffix: str = "") -> Path:
        return self.scratch / f"{uuid.uuid4().hex}{suffix}"

    def temp_dir(self) -> Path:
        path = self.scratch / uuid.uuid4().hex
        path.mkdir()
        return path

    def sink(self, max_bytes: int) -> UploadSink:
        return UploadSink(self.temp_path(".upload"), max_bytes)

    def make_durable(self, temp: Path) -> Path:
        """fsync a finished temp file (slow for big files: done before any lock);
        with a keyring, seal it first. Returns the file to `stage` and `place`."""
        if self.sealing is not None:
            sealed = self.tmp / f"{temp.name}.sealed"
            try:
                self.sealing.seal(temp, sealed)
            finally:
                temp.unlink(missing_ok=True)
            temp = sealed
        with temp.open("rb") as f:
            os.fsync(f.fileno())
        os.chmod(temp, 0o444)
        return temp

    def _put(self, name: str, temp: Path) -> None:
        """The key first (a blob under its name always has one), then the blob."""
        if key_path(temp).exists():
            self.backend.put(name + KEY_SUFFIX, key_path(temp))
        self.backend.put(name, temp)

    def stage(self, temp: Path, sha256: str) -> None:
        """Before the lock: send the blob to a backend that copies (S3). The
        filesystem's rename waits for `place`."""
        if not self.backend.moves_local and not self.backend.exists(self.name(sha256)):
            self._put(self.name(sha256), temp)

    def place(self, temp: Path, sha256: str) -> str:
        """Under the write lock: make blob `sha256` (the content of `temp`) stored.

        Content addressing makes a blob stored already a no-op. Returns its name.
        """
        name = self.name(sha256)
        try:
            if not self.backend.exists(name):
                self._put(name, temp)
        finally:
            sealed_files.remove(temp)
        return name

    def exists(self, sha256: str) -> bool:
        return self.backend.exists(self.name(sha256))

    def read_chunks(self, sha256: str, chunk_bytes: int) -> Iterator[bytes]:
        """The blob's bytes, hashed on the way: a blob that no longer hashes to its
        name (corrupted at rest) ends the stream with an error, never silently."""
        digest = hashlib.sha256()
        for block in self._plaintext(self.name(sha256), chunk_bytes):
            digest.update(block)
            yield block
        if digest.hexdigest() != sha256:
            raise Internal(
                f"blob {sha256} in {self.backend.describe()} does not hash to its name "
                f"(read {digest.hexdigest()}): the stored copy is damaged"
            )

    def _plaintext(self, name: str, chunk_bytes: int) -> Iterator[bytes]:
        """The stored bytes, decrypted on the way if the object is sealed."""
        chunks = self.backend.read_chunks(name, chunk_bytes)
        head = b""
        for block in chunks:
            head += block
            if len(head) >= len(SEALED_MAGIC):
                break
        if not head.startswith(SEALED_MAGIC):
            if head:
                yield head
            yield from chunks
            return
        data_key = self._data_key(name)
        yield from unseal_chunks(_prepend(head, chunks), data_key)

    def _starts_sealed(self, name: str) -> bool:
        for block in self.backend.read_chunks(name, len(SEALED_MAGIC)):
            return block.startswith(SEALED_MAGIC)
        return False

    def _data_key(self, name: str) -> bytes:
        sealing = require_keyring(self.sealing, Path(name))
        try:
            text = b"".join(self.backend.read_chunks(name + KEY_SUFFIX, 1 << 16)).decode()
        except NotFound:
            raise DataLoss(f"{Path(name).name}: sealed, but its key file is missing") from None
        return sealing.keyring().unwrap(WrappedKey.from_text(text.strip()))

    def delete(self, sha256: str) -> None:
        self.backend.delete(self.name(sha256))
        self.backend.delete(self.name(sha256) + KEY_SUFFIX)

    def stored(self) -> Iterator[str]:
        for obj in self.backend.list(PREFIX):
            if not obj.name.endswith(KEY_SUFFIX):
                yield obj.name.rsplit("/", 1)[-1]

    # -- encryption at rest: key rotation and blobs from before it was on --

    def rewrap(self) -> int:
        """Wrap every sealed blob's data key under the active KEK; how many changed.

        Only the small `.key` objects are rewritten (each replaced whole); readers
        see the old or the new wrapping, and both open while the old KEK is held.
        """
        sealing = require_keyring(self.sealing, self.root)
        changed = 0
        for obj in list(self.backend.list(PREFIX)):
            if not obj.name.endswith(KEY_SUFFIX):
                continue
            text = b"".join(self.backend.read_chunks(obj.name, 1 << 16)).decode().strip()
            wrapped = WrappedKey.from_text(text)
            rewrapped = sealing.keyring().rewrap(wrapped)
            if rewrapped is wrapped:
                continue
            temp = self.temp_path(KEY_SUFFIX)
            temp.write_text(rewrapped.to_text())
            try:
                self.backend.put(obj.name, temp)
            finally:
                temp.unlink(missing_ok=True)
            changed += 1
        if changed:
            log.info("blob store: %d data keys re-wrapped under KEK '%s'", changed,
                     sealing.keyring().active_id)  # fmt: skip
        return changed

    def seal_plaintext(self) -> int:
        """Encrypt the blobs stored before encryption was turned on; how many.

        Each is sealed into the scratch dir and stored over the plaintext (key
        first), so a reader sees one or the other whole; the name (sha) stays.
        """
        sealing = require_keyring(self.sealing, self.root)
        sealed = 0
        for sha in list(self.stored()):
            name = self.name(sha)
            if self._starts_sealed(name):
                continue
            temp = self.tmp / f"{uuid.uuid4().hex}.sealed"
            writer = sealing.create(temp)
            try:
                try:
                    for block in self.backend.read_chunks(name, sealing.chunk_bytes):
                        writer.write(block)
                except BaseException:
                    writer.discard()
                    raise
                if writer.finish() != sha:
                    raise InvalidInput(f"blob {sha} does not hash to its name: left as it is")
                os.chmod(temp, 0o444)
                self._put(name, temp)
            finally:
                sealed_files.remove(temp)
            sealed += 1
        if sealed:
            log.info("blob store: %d plaintext blobs encrypted", sealed)
        return sealed

    def sweep_uploads(self, older_than_seconds: float) -> int:
        """Remove temp entries not touched for a while: uploads whose process died.

        Several registry replicas may share the blob volume, so a fresh entry
        may be another replica's upload in progress and stays.
        """
        cutoff = time.time() - older_than_seconds
        removed = 0
        for entry in self.tmp.iterdir():
            try:
                if entry.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        if removed:
            log.info("blob store: removed %d abandoned uploads", removed)
        return removed

    def sweep_unreferenced(self, referenced: Iterable[str]) -> int:
        """Remove blobs no version names (left by a crash between upload and row commit).

        Call under the store's write lock: then no placement is half done (on
        S3, blobs staged within the grace period may still get their row).
        """
        keep = set(referenced)
        cutoff = time.time() - self.unreferenced_grace
        removed = 0
        for obj in list(self.backend.list(PREFIX)):
            # A key goes with its blob (or alone, if a crash came between the two).
            sha = obj.name.rsplit("/", 1)[-1].removesuffix(KEY_SUFFIX)
            if sha in keep or (self.unreferenced_grace and obj.modified > cutoff):
                continue
            self.backend.delete(obj.name)
            removed += not obj.name.endswith(KEY_SUFFIX)
        if removed:
            log.info("blob store: removed %d unreferenced blobs", removed)
        return removed


def _prepend(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    yield from rest
