"""System shared memory regions: tensors passed through /dev/shm instead of the wire.

A same-host client creates a POSIX shared memory object (`shm_open(key)`, the
file /dev/shm/<key>), registers a region of it under a name, and then names that
region, an offset and a byte size on an input or a requested output. Inputs are
read from the region and outputs written into it; only shapes and types travel.

Every access is checked against the registered region and then made with
positional reads and writes on the object's descriptor, never through a memory
mapping: an object truncated by its owner after registration gives a short read
(refused with a clear error) where a mapping would kill the server with SIGBUS.
A read costs one copy from the shared pages, which is what a mapping handed to
torch would cost too (a read-only view must be copied before it is written).
"""

from __future__ import annotations

import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.errors import AlreadyExists, FailedPrecondition, InvalidInput, NotFound, QueueFull

SHM_ROOT = Path("/dev/shm")
# shm_open names are "/name": one leading slash and no other, so nothing
# outside /dev/shm can be named.
_KEY = re.compile(r"^/?([^/\x00]+)$")
# Each region holds a file descriptor: the count is bounded, not the clients' good will.
MAX_REGIONS = 1024


@dataclass(frozen=True)
class RegionStatus:
    name: str
    key: str
    offset: int
    byte_size: int


class _Region:
    """[offset, offset + byte_size) of one shared memory object, by its descriptor."""

    def __init__(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self.status = RegionStatus(name, key, offset, byte_size)
        fd = _open_object(name, key)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInput(f"Invalid shared memory region: '{key}'")
            if offset + byte_size > info.st_size:
                raise InvalidInput(
                    f"failed to register shared memory region '{name}': invalid args "
                    f"(offset {offset} + byte_size {byte_size} > object size {info.st_size})"
                )
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        # In-flight reads and writes: the descriptor closes after the last one,
        # so that its number is never reused under a running pread.
        self._users = 0
        self._closed = False
        self._lock = threading.Lock()

    def check(self, offset: int, byte_size: int) -> None:
        name, size = self.status.name, self.status.byte_size
        if offset < 0 or offset > size or (offset == size and byte_size > 0):
            raise InvalidInput(f"Invalid offset for shared memory region: '{name}'")
        if byte_size < 0 or offset + byte_size > size:
            raise InvalidInput(f"Invalid offset + byte size for shared memory region: '{name}'")

    def read_into(self, offset: int, out: memoryview) -> None:
        self.check(offset, out.nbytes)
        fd = self._acquire()
        try:
            position, done = self.status.offset + offset, 0
            while done < out.nbytes:
                got = os.preadv(fd, [out[done:]], position + done)
                if got == 0:
                    raise self._shrunk()
                done += got
        finally:
            self._release()

    def write(self, offset: int, data: memoryview) -> None:
        self.check(offset, data.nbytes)
        fd = self._acquire()
        try:
            position = self.status.offset + offset
            # A write past the end would grow the owner's object: refuse instead.
            if position + data.nbytes > os.fstat(fd).st_size:
                raise self._shrunk()
            done = 0
            while done < data.nbytes:
                done += os.pwrite(fd, data[done:], position + done)
        finally:
            self._release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = self._users == 0
        if idle:
            os.close(self._fd)

    def _shrunk(self) -> InvalidInput:
        return InvalidInput(
            f"shared memory region '{self.status.name}': its object '{self.status.key}' "
            "is smaller than when it was registered; register it again"
        )

    def _acquire(self) -> int:
        with self._lock:
            if self._closed:
                raise NotFound(f"Unable to find shared memory region: '{self.status.name}'")
            self._users += 1
            return self._fd

    def _release(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._closed and self._users == 0
        if last:
            os.close(self._fd)


def _open_object(name: str, key: str) -> int:
    match = _KEY.match(key)
    if match is None or match.group(1) in (".", ".."):
        raise InvalidInput(
            f"failed to register shared memory region '{name}': key '{key}' is not a "
            "shared memory object name ('/name', as shm_open takes it)"
        )
    try:
        return os.open(SHM_ROOT / match.group(1), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise InvalidInput(f"Unable to open shared memory region: '{key}'") from None


class SystemSharedMemory:
    """The system shared memory regions registered with one server process.

    Thread-safe: registration runs on the event loop, reads and writes on the
    loop or in executor threads.
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._regions)

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not self.enabled:
            raise FailedPrecondition(
                "client shared memory is disabled on this server; start it with "
                "--allow-shared-memory"
            )
        if not name:
            raise InvalidInput("failed to register shared memory region: a name is required")
        if offset < 0 or byte_size < 0:
            raise InvalidInput(f"failed to register shared memory region '{name}': invalid args")
        with self._lock:
            if name in self._regions:
                raise AlreadyExists(f"shared memory region '{name}' already in manager")
            if len(self._regions) >= MAX_REGIONS:
                raise QueueFull(
                    f"failed to register shared memory region '{name}': {MAX_REGIONS} regions "
                    "are registered already; unregister some first"
                )
        region = _Region(name, key, offset, byte_size)  # opens a file: outside the lock
        with self._lock:
            if name in self._regions:
                region.close()
                raise AlreadyExists(f"shared memory region '{name}' already in manager")
            self._regions[name] = region

    def unregister(self, name: str = "") -> None:
        """Unregister one region, or every region when `name` is empty (unknown: no-op)."""
        with self._lock:
            if name:
                region = self._regions.pop(name, None)
                closing = [region] if region is not None else []
            else:
                closing = list(self._regions.values())
                self._regions.clear()
        for region in closing:
            region.close()

    def status(self, name: str = "") -> list[RegionStatus]:
        with self._lock:
            if not name:
                return [r.status for r in self._regions.values()]
            region = self._regions.get(name)
        if region is None:
            raise NotFound(f"Unable to find system shared memory region: '{name}'")
        return [region.status]

    def check(self, name: str, offset: int, byte_size: int) -> None:
        """Refuse a reference to an unknown region or a range outside it."""
        self._region(name).check(offset, byte_size)

    def read(self, name: str, offset: int, byte_size: int) -> np.ndarray:
        """The bytes of an input, copied out of the region (uint8, writable)."""
        region = self._region(name)
        region.check(offset, byte_size)
        out = np.empty(byte_size, dtype=np.uint8)
        region.read_into(offset, out.data)
        return out

    def write(self, name: str, offset: int, byte_size: int, data: bytes | np.ndarray) -> None:
        """Write an output into its region; it must fit in `byte_size`."""
        region = self._region(name)
        region.check(offset, byte_size)
        view = memoryview(data) if isinstance(data, bytes) else _bytes_of(data)
        if view.nbytes > byte_size:
            raise InvalidInput(
                f"shared memory region '{name}': the output needs {view.nbytes} bytes, "
                f"only {byte_size} were given"
            )
        region.write(offset, view)

    def close(self) -> None:
        self.unregister()

    def _region(self, name: str) -> _Region:
        with self._lock:
            region = self._regions.get(name)
        if region is None:
            raise NotFound(f"Unable to find shared memory region: '{name}'")
        return region


def _bytes_of(array: np.ndarray) -> memoryview:
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data
