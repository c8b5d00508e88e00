"""Content-addressed blob storage on a filesystem path (a PVC in the cluster).

Blobs live at `<root>/sha256/<ab>/<sha256>`. A blob is written to
`<root>/tmp/`, fsynced, renamed into place and its folder fsynced: after
`place` returns it survives a crash, and before that nothing outside `tmp/`
exists. `tmp/` holds only uploads in progress; abandoned ones are swept.
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
from modelport.errors import InvalidInput, NotFound

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.blobs = self.root / "sha256"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.blobs / sha256[:2] / sha256

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

    def place(self, temp: Path, sha256: str) -> Path:
        """Rename a durable temp file to blob `sha256` (its content must hash to it).

        Called under the store's write lock, like deletions, so a blob that
        another version is about to reuse cannot vanish in between.
        """
        final = self.path(sha256)
        if final.exists():
            # Same content stored already: content addressing makes this a no-op.
            temp.unlink(missing_ok=True)
            return final
        final.parent.mkdir(exist_ok=True)
        os.replace(temp, final)
        fsync_dir(final.parent)
        fsync_dir(self.blobs)
        return final

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def read_chunks(self, sha256: str, chunk_bytes: int) -> Iterator[bytes]:
        path = self.path(sha256)
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} is missing from the blob store") from None
        with f:
            while block := f.read(chunk_bytes):
                yield block

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def stored(self) -> Iterator[str]:
        for folder in self.blobs.iterdir():
            if folder.is_dir():
                for blob in folder.iterdir():
                    yield blob.name

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
        """Remove blobs no version names (left by a crash between rename and row commit).

        Call under the store's write lock: then no placement is half done.
        """
        keep = set(referenced)
        removed = 0
        for sha in list(self.stored()):
            if sha not in keep:
                self.delete(sha)
                removed += 1
        if removed:
            log.info("blob store: removed %d unreferenced blobs", removed)
        return removed
