"""A file (or a mounted Kubernetes Secret key) re-read when it changes.

Kubernetes updates a mounted Secret by swapping a symlink, so the file is
identified by what `stat` says through the link: inode, size, mtime. A file
that fails to parse after a change keeps the last good value in force and is
logged: a bad edit must neither lock every caller out nor let anyone in.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def _signature(path: Path) -> tuple[int, int, int]:
    stat = os.stat(path)
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class WatchedFile(Generic[T]):
    """`get()` returns the parsed content, re-parsed at most every `check_seconds`
    when the file changed. `generation` grows with every successful reload, so
    caches built on the value know when to drop what they hold."""

    def __init__(
        self,
        path: Path | str,
        parse: Callable[[bytes], T],
        check_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._parse = parse
        self._check_seconds = check_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._signature = _signature(self.path)
        # The first read must succeed: a server does not start on a broken file.
        self._value = parse(self.path.read_bytes())
        self._checked_at = clock()
        self._failed: tuple[int, int, int] | None = None
        self.generation = 0

    def get(self) -> T:
        if self._clock() - self._checked_at >= self._check_seconds:
            self.reload()
        return self._value

    def reload(self) -> bool:
        """Check now; True when a changed file was parsed and put in force."""
        with self._lock:
            self._checked_at = self._clock()
            try:
                signature = _signature(self.path)
            except OSError as exc:
                log.error("%s: keeping the previous content in force: %s", self.path, exc)
                return False
            if signature in (self._signature, self._failed):
                return False
            try:
                value = self._parse(self.path.read_bytes())
            except Exception as exc:
                # Logged once per broken version of the file, not at every check.
                self._failed = signature
                log.error("%s: keeping the previous content in force: %s", self.path, exc)
                return False
            self._signature = signature
            self._value = value
            self.generation += 1
            log.info("%s: reloaded", self.path)
            return True
