"""Content hashing: archives and blobs are named by the sha256 of their bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from modelport.errors import InvalidInput

CHUNK_BYTES = 1 << 20


def sha256_of(path: Path, chunk: int = CHUNK_BYTES) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def directory_digest(model_dir: Path | str) -> str:
    """sha256 over a folder's relative paths and file contents (a folder's identity:
    `ensure_pushed` compares it with the label of the version it pushed last)."""
    root = Path(model_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            while block := f.read(CHUNK_BYTES):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def check_sha256(text: str) -> str:
    if not is_sha256(text):
        raise InvalidInput(f"'{text}' is not a sha256 hex digest")
    return text
