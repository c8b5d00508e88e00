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

from modelport.artifacts.hashing import check_sha256
from modelport.errors import Internal, InvalidInput
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
    ) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.backend: BlobBackend = backend or FileBackend(self.root)
        # How long a blob uploaded outside the lock may wait for its row (see module doc).
        self.unreferenced_grace = 0.0 if self.backend.moves_local else stale_upload_seconds

    def name(self, sha256: str) -> str:
        check_sha256(sha256)
        return f"{PREFIX}/{sha256[:2]}/{sha256}"

    def temp_path(self, suffix: str = "") -> Path:
        return self.tmp / f"{uuid.uuid4().hex}{suffix}"

    def temp_dir(self) -> Path:
        path = self.tmp / uuid.uuid4().hex
        path.mkdir()
        return path

    def sink(self, max_bytes: int) -> UploadSink:
        return UploadSink(self.temp_path(".upload"), max_bytes)

    def make_durable(self, temp: Path) -> None:
        """fsync a finished temp file (slow for big files: done before any lock)."""
        with temp.open("rb") as f:
            os.fsync(f.fileno())
        os.chmod(temp, 0o444)

    def stage(self, temp: Path, sha256: str) -> None:
        """Before the lock: send the blob to a backend that copies (S3). The
        filesystem's rename waits for `place`."""
        if not self.backend.moves_local and not self.backend.exists(self.name(sha256)):
            self.backend.put(self.name(sha256), temp)

    def place(self, temp: Path, sha256: str) -> str:
        """Under the write lock: make blob `sha256` (the content of `temp`) stored.

        Content addressing makes a blob stored already a no-op. Returns its name.
        """
        name = self.name(sha256)
        try:
            if not self.backend.exists(name):
                self.backend.put(name, temp)
        finally:
            temp.unlink(missing_ok=True)
        return name

    def exists(self, sha256: str) -> bool:
        return self.backend.exists(self.name(sha256))

    def read_chunks(self, sha256: str, chunk_bytes: int) -> Iterator[bytes]:
        """The blob's bytes, hashed on the way: a blob that no longer hashes to its
        name (corrupted at rest) ends the stream with an error, never silently."""
        digest = hashlib.sha256()
        for block in self.backend.read_chunks(self.name(sha256), chunk_bytes):
            digest.update(block)
            yield block
        if digest.hexdigest() != sha256:
            raise Internal(
                f"blob {sha256} in {self.backend.describe()} does not hash to its name "
                f"(read {digest.hexdigest()}): the stored copy is damaged"
            )

    def delete(self, sha256: str) -> None:
        self.backend.delete(self.name(sha256))

    def stored(self) -> Iterator[str]:
        for obj in self.backend.list(PREFIX):
            yield obj.name.rsplit("/", 1)[-1]

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
            sha = obj.name.rsplit("/", 1)[-1]
            if sha in keep or (self.unreferenced_grace and obj.modified > cutoff):
                continue
            self.backend.delete(obj.name)
            removed += 1
        if removed:
            log.info("blob store: removed %d unreferenced blobs", removed)
        return removed
