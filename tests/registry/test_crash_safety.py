"""Killing the registry (SIGKILL) mid-upload leaves no version and no readable partial blob."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from modelport.artifacts.archive import pack_directory
from modelport.client.channel import ModelportClientError
from modelport.client.registry import RegistryClient
from modelport.proto.modelport.registry.v1 import registry_pb2 as pb
from modelport.registry.blobs import BlobStore
from modelport.registry.store import RegistryStore

from tests.registry.registry_servers import ThreadedRegistry
from tests.registry.service_process import RegistryProcess


@pytest.mark.slow
def test_kill_mid_upload_then_restart(tmp_path: Path, make_model: Callable[..., Path]) -> None:
    database = f"sqlite:///{tmp_path / 'registry.db'}"
    blobs = tmp_path / "blobs"
    buffer = io.BytesIO()
    pack_directory(make_model("m", 2.0), buffer)
    archive = buffer.getvalue() + b"\0" * (3 * 1024 * 1024)  # tar padding: still a valid tar
    header = pb.UploadHeader(
        model="m", sha256=hashlib.sha256(archive).hexdigest(), create_model=True
    )
    half_sent = threading.Event()
    never = threading.Event()

    def messages() -> Iterator[pb.UploadVersionRequest]:
        yield pb.UploadVersionRequest(header=header)
        for offset in range(0, len(archive) // 2, 65536):
            yield pb.UploadVersionRequest(chunk=archive[offset : offset + 65536])
        half_sent.set()
        never.wait(30)  # the upload stalls half way; the registry dies now

    registry = RegistryProcess(database, blobs)
    errors: list[grpc.RpcError] = []
    try:
        with RegistryClient(registry.address) as client:

            def upload() -> None:
                try:
                    client.stub.UploadVersion(messages(), timeout=60)
                except grpc.RpcError as exc:
                    errors.append(exc)

            uploader = threading.Thread(target=upload)
            uploader.start()
            assert half_sent.wait(30)
            deadline = time.monotonic() + 10
            partial = []
            while time.monotonic() < deadline and not partial:
                partial = [p for p in (blobs / "tmp").iterdir() if p.stat().st_size > 0]
                time.sleep(0.05)
            assert partial, "the upload's temp file should exist before the kill"
            registry.process.send_signal(signal.SIGKILL)
            registry.process.wait(10)
            never.set()
            uploader.join(30)
    finally:
        registry.kill()
    assert errors and errors[0].code() == grpc.StatusCode.UNAVAILABLE

    # Restarted with the default hour of grace for abandoned uploads: the partial
    # file goes at once all the same, since the process that wrote it is dead.
    registry = RegistryProcess(database, blobs)
    try:
        with RegistryClient(registry.address) as client:
            assert client.list_models() == []
            with pytest.raises(ModelportClientError) as info:
                client.resolve("m")
            assert info.value.code == grpc.StatusCode.NOT_FOUND
            assert list((blobs / "tmp").iterdir()) == []
            assert [p for p in (blobs / "sha256").rglob("*") if p.is_file()] == []
            # The restarted registry takes the same upload whole.
            version = client.stub.UploadVersion(
                iter(
                    [pb.UploadVersionRequest(header=header)]
                    + [
                        pb.UploadVersionRequest(chunk=archive[i : i + 65536])
                        for i in range(0, len(archive), 65536)
                    ]
                ),
                timeout=60,
            )
            assert version.version == 1
            assert client.resolve("m").sha256 == version.sha256
    finally:
        assert registry.terminate() == 0, "SIGTERM drains and exits cleanly"


def test_leftovers_of_a_crash_are_swept_but_fresh_uploads_stay(tmp_path: Path) -> None:
    """A blob whose row never committed goes at start; so do uploads abandoned long ago."""
    database = f"sqlite:///{tmp_path / 'registry.db'}"
    store = RegistryStore.open(database, tmp_path / "blobs", max_upload_bytes=1 << 20)
    temp = store.blobs.temp_path()
    temp.write_bytes(b"orphan")
    store.blobs.make_durable(temp)
    orphan = hashlib.sha256(b"orphan").hexdigest()
    store.blobs.place(temp, orphan)
    assert store.blobs.exists(orphan)
    abandoned = store.blobs.temp_path(".upload")
    abandoned.write_bytes(b"half")
    os.utime(abandoned, (time.time() - 7200, time.time() - 7200))
    dead_partial = store.blobs.temp_path(".upload")  # fresh, but its writer is gone
    dead_partial.write_bytes(b"half")
    store.close()
    other_replica = BlobStore(tmp_path / "blobs")  # alive: its upload is still arriving
    in_progress = other_replica.temp_path(".upload")
    in_progress.write_bytes(b"half")

    reopened = RegistryStore.open(database, tmp_path / "blobs", max_upload_bytes=1 << 20)
    assert not reopened.blobs.exists(orphan)
    reopened.close()
    assert not abandoned.exists()
    assert not dead_partial.exists()
    assert in_progress.exists()
    other_replica.owner.close()


def test_cancelled_upload_leaves_nothing(
    registry: ThreadedRegistry, make_model: Callable[..., Path]
) -> None:
    buffer = io.BytesIO()
    pack_directory(make_model("m", 2.0), buffer)
    archive = buffer.getvalue()
    header = pb.UploadHeader(
        model="m", sha256=hashlib.sha256(archive).hexdigest(), create_model=True
    )
    blobs = registry.server.settings.blob_dir
    half_sent = threading.Event()
    release = threading.Event()

    def messages() -> Iterator[pb.UploadVersionRequest]:
        yield pb.UploadVersionRequest(header=header)
        yield pb.UploadVersionRequest(chunk=archive[: len(archive) // 2])
        half_sent.set()
        release.wait(30)

    with RegistryClient(registry.address) as client:
        call = client.stub.UploadVersion.future(messages(), timeout=60)
        assert half_sent.wait(30)
        deadline = time.monotonic() + 10
        while not any((blobs / "tmp").iterdir()):
            assert time.monotonic() < deadline, "the upload never reached the registry"
            time.sleep(0.02)
        call.cancel()
        release.set()
        deadline = time.monotonic() + 10
        while any((blobs / "tmp").iterdir()):
            assert time.monotonic() < deadline, (
                f"temp file stayed: {list((blobs / 'tmp').iterdir())}"
            )
            time.sleep(0.02)
        assert client.list_models() == []
    assert [p for p in (blobs / "sha256").rglob("*") if p.is_file()] == []
