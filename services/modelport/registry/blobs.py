"""Content-addressed blob storage on a filesystem path (a PVC in the cluster).

Blobs live at `<root>/sha256/<ab>/<sha256>`. A blob is written to
`<root>/tmp/`, fsynced, renamed into place and its folder fsynced: after
`place` returns it survives a crash, and before that nothing outside `tmp/`
exists. `tmp/` holds only uploads in progress; abandoned ones are swept.

With a keyring (`--kek-file`), `make_durable` seals a blob before it is placed:
the file holds ciphertext and `<sha256>.key` its wrapped data key (see
`artifacts.sealed_files`); reads decrypt on the fly. The name stays the sha256
of the plaintext. Blobs stored before encryption was turned on still read as
they are, until `seal_plaintext` encrypts them.
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
from modelport.artifacts.sealed_blobs import MAGIC as SEALED_MAGIC
from modelport.artifacts.sealed_files import SealedFiles, is_sealed, require_keyring
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
    def __init__(
        self, root: Path | str, sealing: SealedFiles | None = None, scratch: Path | None = None
    ) -> None:
        self.root = Path(root)
        self.sealing = sealing
        self.tmp = self.root / "tmp"
        self.blobs = self.root / "sha256"
        self.tmp.mkdir(parents=True, exist_ok=True)
        # Where plaintext lives while an upload is checked. With encryption on it
        # may be elsewhere (a memory-backed volume), since only sealed files are
        # renamed into place; without, it must be tmp/ for the rename.
        self.scratch = Path(scratch) if scratch is not None and sealing is not None else self.tmp
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.blobs / sha256[:2] / sha256

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
        with a keyring, seal it first. Returns the file to `place`."""
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

    def place(self, temp: Path, sha256: str) -> Path:
        """Rename a durable temp file to blob `sha256` (its content must hash to it).

        Called under the store's write lock, like deletions, so a blob that
        another version is about to reuse cannot vanish in between.
        """
        final = self.path(sha256)
        if final.exists():
            # Same content stored already: content addressing makes this a no-op.
            sealed_files.remove(temp)
            return final
        final.parent.mkdir(exist_ok=True)
        sealed_files.move(temp, final)
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
            if f.read(len(SEALED_MAGIC)) == SEALED_MAGIC:
                f.close()
                yield from require_keyring(self.sealing, path).chunks(path, chunk_bytes)
                return
            f.seek(0)
            while block := f.read(chunk_bytes):
                yield block

    def delete(self, sha256: str) -> None:
        sealed_files.remove(self.path(sha256))

    def stored(self) -> Iterator[str]:
        for folder in self.blobs.iterdir():
            if folder.is_dir():
                for blob in folder.iterdir():
                    if not blob.name.endswith(sealed_files.KEY_SUFFIX):
                        yield blob.name

    # -- encryption at rest: key rotation and blobs from before it was on --

    def rewrap(self) -> int:
        """Wrap every sealed blob's data key under the active KEK; how many changed.

        Only the small `.key` files are rewritten (each atomically); readers see
        the old or the new wrapping, and both open while the old KEK is held.
        """
        sealing = require_keyring(self.sealing, self.root)
        changed = 0
        for sha in list(self.stored()):
            path = self.path(sha)
            if path.exists() and is_sealed(path) and sealing.rewrap(path):
                changed += 1
        if changed:
            log.info("blob store: %d data keys re-wrapped under KEK '%s'", changed,
                     sealing.keyring().active_id)  # fmt: skip
        return changed

    def seal_plaintext(self) -> int:
        """Encrypt the blobs stored before encryption was turned on; how many.

        Each is sealed beside itself and renamed over the plaintext, so a
        reader sees one or the other whole; the plaintext's name (sha) stays.
        """
        sealing = require_keyring(self.sealing, self.root)
        sealed = 0
        for sha in list(self.stored()):
            path = self.path(sha)
            if not path.exists() or is_sealed(path):
                continue
            temp = self.tmp / f"{uuid.uuid4().hex}.sealed"
            if sealing.seal(path, temp) != sha:
                sealed_files.remove(temp)
                raise InvalidInput(f"blob {sha} does not hash to its name: left as it is")
            os.chmod(temp, 0o444)
            sealed_files.move(temp, path)
            fsync_dir(path.parent)
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
        entries = [
            *self.tmp.iterdir(),
            *(self.scratch.iterdir() if self.scratch != self.tmp else ()),
        ]
        for entry in entries:
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
        for folder in self.blobs.iterdir():  # keys whose blob never arrived (a crash)
            for key in folder.glob("*" + sealed_files.KEY_SUFFIX) if folder.is_dir() else ():
                if not key.with_name(key.name.removesuffix(sealed_files.KEY_SUFFIX)).exists():
                    key.unlink(missing_ok=True)
        if removed:
            log.info("blob store: removed %d unreferenced blobs", removed)
        return removed
