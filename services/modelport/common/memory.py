"""Giving memory that nothing uses back to the system.

A rejected 60 MB request is freed as soon as its call ends (no reference cycle
holds it: see `grpc_errors`), but glibc keeps the pages of grpc's many small
message slices in its arenas, so the resident size stayed hundreds of MiB above
baseline with nothing using it; under a memory limit that is an OOM kill waiting
to happen. `MemoryTrimmer` reads the resident size once a second and, when it
has grown by more than `threshold_bytes` since the last look, asks glibc to
return its free pages (`malloc_trim(0)`, in a worker thread). Where the C
library is not glibc (or /proc is absent) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
STATM = "/proc/self/statm"


def resident_bytes() -> int:
    """This process's resident set size (0 where /proc is not available)."""
    try:
        with open(STATM, "rb") as f:
            return int(f.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class MemoryTrimmer:
    """Trims when the resident size is `threshold_bytes` above its floor (the size it
    came back to after the last useful trim). A trim that gives little back means
    the memory is in use: the next look waits twice as long (up to
    `max_interval`), and after three such trims in a row the floor moves up."""

    def __init__(
        self, interval: float = 1.0, threshold_bytes: int = 32 << 20, max_interval: float = 30.0
    ) -> None:
        self.interval = interval
        self.threshold_bytes = threshold_bytes
        self.max_interval = max_interval
        self.trims = 0

    async def run(self) -> None:
        trim = malloc_trim()
        if trim is None or not resident_bytes():
            return
        floor = resident_bytes()
        wait = self.interval
        in_use = 0  # trims in a row that gave little back
        while True:
            await asyncio.sleep(wait)
            now = resident_bytes()
            if now <= floor + self.threshold_bytes:
                floor, wait, in_use = min(floor, now), self.interval, 0
                continue
            await asyncio.to_thread(trim, 0)
            self.trims += 1
            after = resident_bytes()
            log.debug("malloc_trim: resident %d MiB -> %d MiB", now >> 20, after >> 20)
            if now - after >= self.threshold_bytes:
                wait, in_use = self.interval, 0
                continue
            in_use += 1
            wait = min(wait * 2, self.max_interval)
            if in_use >= 3:
                floor, wait, in_use = after, self.interval, 0
