"""System shared memory regions on their own, against real /dev/shm objects."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from modelport.errors import AlreadyExists, FailedPrecondition, InvalidInput, NotFound
from modelport.inference.shared_memory import SHM_ROOT, SystemSharedMemory

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


@pytest.fixture
def shm_object() -> Iterator[tuple[str, int]]:
    """A 4 KiB + 100 byte object in /dev/shm, named as a client would: '/name'."""
    name = f"modelport-test-{uuid.uuid4().hex[:12]}"
    size = 4096 + 100
    path = SHM_ROOT / name
    with open(path, "wb") as f:
        f.write(bytes(range(256)) * (size // 256) + bytes(size % 256))
    yield f"/{name}", size
    path.unlink(missing_ok=True)


def test_register_read_write_status_unregister(shm_object: tuple[str, int]) -> None:
    key, _ = shm_object
    shm = SystemSharedMemory()
    shm.register("input", key, 4000, 196)  # crosses a page boundary
    assert [(s.name, s.key, s.offset, s.byte_size) for s in shm.status()] == [
        ("input", key, 4000, 196)
    ]
    data = shm.read("input", 10, 8)
    assert data.tobytes() == bytes((4010 + i) % 256 for i in range(8))
    shm.write("input", 0, 4, np.array([7], dtype=np.int32))
    with open(SHM_ROOT / key[1:], "rb") as f:
        f.seek(4000)
        assert np.frombuffer(f.read(4), np.int32)[0] == 7
    shm.unregister("input")
    assert shm.status() == []
    with pytest.raises(NotFound, match="Unable to find shared memory region: 'input'"):
        shm.read("input", 0, 4)


@pytest.mark.parametrize(
    ("offset", "size", "message"),
    [
        (-1, 4, "Invalid offset"),
        (100, 1, "Invalid offset"),
        (96, 8, "Invalid offset \\+ byte size"),
        (0, 101, "Invalid offset \\+ byte size"),
        (0, -1, "Invalid offset \\+ byte size"),
    ],
)
def test_a_range_outside_the_region_is_refused(
    shm_object: tuple[str, int], offset: int, size: int, message: str
) -> None:
    key, _ = shm_object
    shm = SystemSharedMemory()
    shm.register("r", key, 4096, 100)
    with pytest.raises(InvalidInput, match=message):
        shm.read("r", offset, size)
    with pytest.raises(InvalidInput, match=message):
        shm.write("r", offset, size, b"x" * max(size, 0))


def test_registration_is_checked(shm_object: tuple[str, int]) -> None:
    key, size = shm_object
    shm = SystemSharedMemory()
    with pytest.raises(InvalidInput, match="invalid args"):
        shm.register("big", key, 0, size + 1)
    with pytest.raises(InvalidInput, match="invalid args"):
        shm.register("neg", key, -4, 8)
    with pytest.raises(InvalidInput, match="Unable to open shared memory region: '/no-such"):
        shm.register("missing", "/no-such-object-here", 0, 8)
    for bad in ("/../etc/passwd", "/a/b", "..", ""):
        with pytest.raises(InvalidInput):
            shm.register("escape", bad, 0, 1)
    shm.register("ok", key, 0, 8)
    with pytest.raises(AlreadyExists, match="already in manager"):
        shm.register("ok", key, 0, 8)
    with pytest.raises(NotFound, match="Unable to find system shared memory region: 'nope'"):
        shm.status("nope")
    shm.unregister("nope")  # unknown: nothing to do, as Triton
    shm.unregister()
    assert len(shm) == 0


def test_symlinks_and_directories_are_not_followed(tmp_path: object) -> None:
    name = f"modelport-link-{uuid.uuid4().hex[:8]}"
    link = SHM_ROOT / name
    os.symlink("/etc/hostname", link)
    try:
        with pytest.raises(InvalidInput, match="Unable to open"):
            SystemSharedMemory().register("l", f"/{name}", 0, 1)
    finally:
        link.unlink()


def test_an_output_larger_than_its_range_is_refused(shm_object: tuple[str, int]) -> None:
    key, _ = shm_object
    shm = SystemSharedMemory()
    shm.register("out", key, 0, 64)
    with pytest.raises(InvalidInput, match="needs 16 bytes, only 8"):
        shm.write("out", 0, 8, np.zeros(4, np.float32))


def test_a_truncated_object_is_refused_not_read(shm_object: tuple[str, int]) -> None:
    """The owner shrinks the object after registering it: a read past its new end
    must fail cleanly (a mapping would raise SIGBUS and kill the server)."""
    key, _ = shm_object
    shm = SystemSharedMemory()
    shm.register("r", key, 0, 4096)
    os.truncate(SHM_ROOT / key[1:], 100)
    with pytest.raises(InvalidInput, match="smaller than when it was registered"):
        shm.read("r", 0, 4096)
    with pytest.raises(InvalidInput, match="smaller than when it was registered"):
        shm.write("r", 0, 4096, bytes(4096))
    assert shm.read("r", 0, 100).nbytes == 100


def test_disabled_registry_refuses_registration(shm_object: tuple[str, int]) -> None:
    shm = SystemSharedMemory(enabled=False)
    with pytest.raises(FailedPrecondition, match="--allow-shared-memory"):
        shm.register("r", shm_object[0], 0, 8)
    assert shm.status() == []


def test_unregister_during_reads_never_reads_another_file(shm_object: tuple[str, int]) -> None:
    """Reads racing an unregister either succeed or say the region is gone."""
    key, _ = shm_object
    shm = SystemSharedMemory()
    outcomes: list[str] = []

    def reader() -> None:
        for _ in range(200):
            try:
                data = shm.read("r", 0, 16)
                assert data.tobytes() == bytes(range(16))
                outcomes.append("read")
            except NotFound:
                outcomes.append("gone")

    for _ in range(5):
        shm.register("r", key, 0, 64)
        thread = threading.Thread(target=reader)
        thread.start()
        shm.unregister("r")
        thread.join()
    assert set(outcomes) <= {"read", "gone"}


def test_the_number_of_regions_is_bounded(
    shm_object: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelport.errors import QueueFull
    from modelport.inference import shared_memory

    monkeypatch.setattr(shared_memory, "MAX_REGIONS", 2)
    shm = SystemSharedMemory()
    shm.register("a", shm_object[0], 0, 8)
    shm.register("b", shm_object[0], 8, 8)
    with pytest.raises(QueueFull, match="2 regions are registered already"):
        shm.register("c", shm_object[0], 16, 8)
    shm.unregister("a")
    shm.register("c", shm_object[0], 16, 8)
    shm.close()
