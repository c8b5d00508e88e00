"""Bad uploads are refused with a reason and leave nothing behind (through the real server)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import torch
from modelport.client.channel import ModelportClientError
from modelport.client.registry import RegistryClient
from modelport.proto.modelport.registry.v1 import registry_pb2 as pb

from tests.registry.registry_servers import ThreadedRegistry, registry_settings

MARKER = Path(tempfile.gettempdir()) / f"modelport-unpickled-{os.getpid()}"


class Bomb:
    """Unpickling this would create MARKER: proof that the registry unpickled."""

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (MARKER,))


def torchscript_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.ReLU()), buffer)
    return buffer.getvalue()


def tar_of(entries: dict[str, bytes], *, gzip: bool = False, link: tuple[str, str] | None = None):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzip else "w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type = tarfile.SYMTYPE
            info.linkname = link[1]
            tar.addfile(info)
    return buffer.getvalue()


def upload(client: RegistryClient, data: bytes, *, sha: str = "") -> pb.ModelVersion:
    header = pb.UploadHeader(
        model="bad", sha256=sha or hashlib.sha256(data).hexdigest(), create_model=True
    )
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    messages = [pb.UploadVersionRequest(header=header)]
    messages += [pb.UploadVersionRequest(chunk=c) for c in chunks]
    return client.stub.UploadVersion(iter(messages), timeout=60)


def assert_nothing_stored(registry: ThreadedRegistry, client: RegistryClient) -> None:
    assert [m.name for m in client.list_models()] == []
    blobs = registry.server.settings.blob_dir
    assert [p for p in (blobs / "sha256").rglob("*") if p.is_file()] == []
    assert list((blobs / "tmp").iterdir()) == []


@pytest.fixture
def good(make_model: Callable[..., Path]) -> dict[str, bytes]:
    model_dir = make_model("bad", 2.0)
    return {
        "config.pbtxt": (model_dir / "config.pbtxt").read_bytes(),
        "1/model.pt2": (model_dir / "1" / "model.pt2").read_bytes(),
    }


CASES: dict[str, tuple[Callable[[dict[str, bytes]], bytes], str]] = {
    "path escape": (lambda g: tar_of({**g, "../../evil.txt": b"x"}), "escapes"),
    "absolute path": (lambda g: tar_of({**g, "/etc/cron.d/x": b"x"}), "absolute"),
    "symlink": (lambda g: tar_of(g, link=("1/weights", "/etc/passwd")), "links are not allowed"),
    "missing config": (lambda g: tar_of({"1/model.pt": torchscript_bytes()}), "no config.pbtxt"),
    "invalid config": (
        lambda g: tar_of({**g, "config.pbtxt": b"name: 'x' input [ { nme: 1 } ]"}),
        "invalid config.pbtxt",
    ),
    "torchscript config without outputs": (
        lambda g: tar_of({"config.pbtxt": b'name: "x"', "1/model.pt": torchscript_bytes()}),
        "no inputs or no outputs",
    ),
    "model does not load": (
        lambda g: tar_of({**g, "1/model.pt2": b"not a model at all"}),
        "does not load",
    ),
    "pickle is never unpickled": (
        lambda g: tar_of({"config.pbtxt": g["config.pbtxt"], "1/model.pt": pickle.dumps(Bomb())}),
        "does not load",
    ),
    "no model file": (lambda g: tar_of({"config.pbtxt": g["config.pbtxt"]}), "no model file"),
    "two versions": (
        lambda g: tar_of({**g, "2/model.pt2": g["1/model.pt2"]}),
        "push one version at a time",
    ),
    "not a tar": (lambda g: b"just some bytes" * 100, "not a tar"),
    # What a replica could not load: refused at push, as the replica would refuse it.
    "negative max_batch_size": (
        lambda g: tar_of({**g, "config.pbtxt": bounded_config(-5)}),
        "max_batch_size -5 must be >= 0",
    ),
    "dims no batch can hold": (
        lambda g: tar_of({**g, "config.pbtxt": bounded_config(8, dims=2**63 - 1)}),
        "more than the 1024 MiB one tensor of a batch may take",
    ),
    "max_batch_size above the exported bound": (
        lambda g: tar_of({**g, "config.pbtxt": bounded_config(32)}),
        "max_batch_size 32 is above the batch bound of the exported program (8",
    ),
    "outputs the config does not declare": (
        lambda g: tar_of({**g, "config.pbtxt": bounded_config(8, output_dims=3)}),
        "failed its warm-up run",
    ),
}


def bounded_config(max_batch_size: int, *, dims: int = 4, output_dims: int = 4) -> bytes:
    """The Scale model's config (exported with a batch bound of 8) with one field changed."""
    return (
        f"max_batch_size: {max_batch_size}\n"
        f'input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {dims} ] }} ]\n'
        f'output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {output_dims} ] }} ]\n'
    ).encode()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_archive_is_invalid_argument(
    case: str, good: dict[str, bytes], registry: ThreadedRegistry
) -> None:
    make, reason = CASES[case]
    with RegistryClient(registry.address) as client:
        with pytest.raises(grpc.RpcError) as info:
            upload(client, make(good))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason in info.value.details()
        assert_nothing_stored(registry, client)
    assert not MARKER.exists()


def test_sha256_mismatch_and_oversize(good: dict[str, bytes], registry: ThreadedRegistry) -> None:
    with RegistryClient(registry.address) as client:
        with pytest.raises(grpc.RpcError) as info:
            upload(client, tar_of(good), sha="0" * 64)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "sha256 mismatch" in info.value.details()
        assert_nothing_stored(registry, client)

        header = pb.UploadHeader(model="bad", create_model=True)
        data = tar_of(good)
        messages = [pb.UploadVersionRequest(header=header), pb.UploadVersionRequest(chunk=data)]
        with pytest.raises(grpc.RpcError) as info:
            client.stub.UploadVersion(iter(messages), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "needs the sha256" in info.value.details()

        big = tar_of({**good, "1/padding.bin": b"\0" * (9 * 1024 * 1024)})
        with pytest.raises(grpc.RpcError) as info:
            upload(client, big)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "larger than the limit" in info.value.details()
        assert_nothing_stored(registry, client)


def test_gzip_flat_and_wrapped_layouts_are_accepted(
    good: dict[str, bytes], registry: ThreadedRegistry, tmp_path: Path
) -> None:
    flat = {"config.pbtxt": good["config.pbtxt"], "model.pt2": good["1/model.pt2"]}
    wrapped = {f"bad/{name}": data for name, data in good.items()}
    with RegistryClient(registry.address) as client:
        first = upload(client, tar_of(flat, gzip=True))
        second = upload(client, tar_of(wrapped))
        # Same files in a different wrapping: the stored form is the same bytes.
        assert first.sha256 == second.sha256
        assert (first.version, second.version) == (1, 2)
        client.pull("bad:2", tmp_path / "out")
    assert (tmp_path / "out" / "2" / "model.pt2").read_bytes() == good["1/model.pt2"]
    assert 'name: "bad"' in (tmp_path / "out" / "config.pbtxt").read_text()


def test_export_program_completes_a_bare_config(
    good: dict[str, bytes], registry: ThreadedRegistry
) -> None:
    with RegistryClient(registry.address) as client:
        version = upload(client, tar_of({**good, "config.pbtxt": b'platform: "torch_export"'}))
    signature = version.signature
    assert [t.datatype for t in signature.inputs] == ["FP32"]
    assert list(signature.inputs[0].dims) == [4] and len(signature.outputs) == 1
    # The dynamic leading dim is the batch, at most the program's own bound (8).
    assert signature.max_batch_size == 8


def test_a_lone_exported_program_is_pushed_without_a_config(
    good: dict[str, bytes], registry: ThreadedRegistry, tmp_path: Path
) -> None:
    """`models push` of a folder holding only `1/model.pt2` (or a flat `model.pt2`)."""
    for layout in ("1/model.pt2", "model.pt2"):
        folder = tmp_path / layout.replace("/", "-")
        (folder / layout).parent.mkdir(parents=True)
        (folder / layout).write_bytes(good["1/model.pt2"])
        with RegistryClient(registry.address) as client:
            version = client.push(folder, name="bare")
            assert version.signature.max_batch_size == 8
            assert [t.name for t in version.signature.inputs] == ["x"]
            client.pull(f"bare:{version.version}", tmp_path / f"out{version.version}")
        config = (tmp_path / f"out{version.version}" / "config.pbtxt").read_text()
        assert 'platform: "torch_export"' in config and "max_batch_size: 8" in config


def test_duplicate_model_is_already_exists(registry: ThreadedRegistry) -> None:
    with RegistryClient(registry.address) as client:
        client.create_model("dup")
        with pytest.raises(ModelportClientError) as info:
            client.create_model("dup")
        assert info.value.code == grpc.StatusCode.ALREADY_EXISTS
        assert "'dup'" in info.value.message


def test_upload_to_unknown_model_without_create_is_not_found(
    good: dict[str, bytes], registry: ThreadedRegistry
) -> None:
    data = tar_of(good)
    header = pb.UploadHeader(model="ghost", sha256=hashlib.sha256(data).hexdigest())
    messages = iter([pb.UploadVersionRequest(header=header), pb.UploadVersionRequest(chunk=data)])
    with RegistryClient(registry.address) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.stub.UploadVersion(messages, timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


class Zeros(io.RawIOBase):
    """`size` zero bytes, read in pieces (a bomb's member, never all in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def test_compression_bomb_is_refused_before_it_unpacks(
    good: dict[str, bytes], tmp_path: Path
) -> None:
    """A gzip far smaller than the upload limit that unpacks to 128 MiB (about
    1000x) is refused by the ratio bound, with nothing written."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for name, data in good.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("1/padding.bin")
        info.size = 128 << 20
        tar.addfile(info, io.BufferedReader(Zeros(info.size)))
    bomb = buffer.getvalue()
    assert len(bomb) < 2 << 20  # well within the 2 GiB upload limit below
    settings = dataclasses.replace(registry_settings(tmp_path), max_upload_mb=2048)
    registry = ThreadedRegistry(settings)
    try:
        with RegistryClient(registry.address) as client:
            with pytest.raises(grpc.RpcError) as info:
                upload(client, bomb)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "--max-compression-ratio" in info.value.details()
            assert_nothing_stored(registry, client)
    finally:
        registry.stop()
