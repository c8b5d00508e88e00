"""Which process an upload in progress belongs to, so a restart can tell a dead
process's partial uploads from a live replica's.

Each `BlobStore` claims an owner id and holds an exclusive `flock` on
`owners/<owner>.owner` (beside `tmp/`, which holds only uploads) for as long
as its process lives; every temp entry it creates is named `<owner>-…`.
The kernel drops the lock when the process dies
(SIGKILL, OOM-kill included), so a sweeper that can take the lock knows the
owner is gone and removes its entries at once, without waiting for the
stale-upload period. Replicas sharing the blob volume keep each other's
entries: their locks are held.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from pathlib import Path

SUFFIX = ".owner"


class UploadOwner:
    """This process's claim on the temp entries it names `<id>-…`."""

    def __init__(self, claims: Path) -> None:
        claims.mkdir(parents=True, exist_ok=True)
        self.id = uuid.uuid4().hex[:16]
        # Locked under a name no sweeper looks at, then renamed (the lock follows the
        # inode): a sweeper can never take the lock of a claim not yet locked.
        pending = claims / f"{self.id}{SUFFIX}.new"
        self._fd = os.open(pending, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(pending, claims / f"{self.id}{SUFFIX}")

    def name(self, rest: str) -> str:
        return f"{self.id}-{rest}"

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def owner_of(entry: Path) -> str:
    """The owner id an entry's name carries ("" for names from before owners)."""
    head, sep, _ = entry.name.partition("-")
    return head if sep and len(head) == 16 else ""


def dead_owners(claims: Path) -> set[str]:
    """Owners in `claims` whose process is gone (their lock can be taken); their
    claim files are removed once taken."""
    dead: set[str] = set()
    for claim in claims.glob(f"*{SUFFIX}"):
        try:
            fd = os.open(claim, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # held: its process is alive
        dead.add(claim.name.removesuffix(SUFFIX))
        claim.unlink(missing_ok=True)
        os.close(fd)
    return dead


def remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)
