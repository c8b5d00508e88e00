"""Content-addressed blob storage on a filesystem path (a PVC in the cluster).

Blobs live at `<root>/sha256/<ab>/<sha256>`. A blob is written to
`<root>/tmp/`, fsynced, renamed into place and its folder fsynced: after
`commit` returns it survives a crash, and before that nothing outside `tmp/`
exists. `tmp/` holds only uploads in progress and is emptied at start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from modelport.errors import InvalidInput, NotFound

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InvalidInput(f"'{sha256}' is not a sha256 hex digest")
        return self.blobs / sha256[:2] / sha256

    def temp_path(self, suffix: str = "") -> Path:
        return self.tmp / f"{uuid.uuid4().hex}{suffix}"

    def temp_dir(self) -> Path:
        path = self.tmp / uuid.uuid4().hex
        path.mkdir()
        return path

    def sink(self, max_bytes: int) -> UploadSink:
        return UploadSink(self.temp_path(".upload"), max_bytes)

    def commit(self, temp: Path, sha256: str) -> Path:
        """Make `temp` the durable blob `sha256` (its content must hash to it)."""
        final = self.path(sha256)
        if final.exists():
            # Same content stored already: content addressing makes this a no-op.
            temp.unlink(missing_ok=True)
            return final
        with temp.open("rb") as f:
            os.fsync(f.fileno())
        final.parent.mkdir(exist_ok=True)
        os.chmod(temp, 0o444)
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

    def sweep(self, referenced: Iterable[str]) -> int:
        """At start: drop unfinished uploads and blobs no version row names.

        A crash between the blob's rename and its row's commit leaves such a
        blob; no read can reach it, and this removes it. Returns how many
        entries went.
        """
        removed = 0
        for entry in self.tmp.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        keep = set(referenced)
        for sha in list(self.stored()):
            if sha not in keep:
                self.path(sha).unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("blob store: removed %d unfinished or unreferenced entries", removed)
        return removed
