"""`--compile aoti`: an AOTInductor package with a dynamic batch dimension, served by the
real inference service with dynamic batching at batch 32, equal to the parent; served from
an encrypted artifact cache without its shared library on disk; and the registry's refusal
of such a package pushed by hand (it is native code)."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from modelport.artifacts import archive, archive_checks
from modelport.artifacts.config import read_config
from modelport.artifacts.keyring import new_key
from modelport.artifacts.sealed_archives import MEMORY_ROOT
from modelport.artifacts.sealed_files import is_sealed
from modelport.common.encryption import sealing_of
from modelport.compression.derive import derive_folder
from modelport.compression.spec import DeriveSpec
from modelport.errors import InvalidInput
from modelport.inference.artifact_cache import Artifact, ArtifactCache
from modelport.proto.inference import grpc_service_pb2 as pb

from tests.compression.tiny_models import NAME, expected, inputs
from tests.inference.requests import output, raw_request


@pytest.fixture(scope="session")
def aoti_repo(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model compiled once for the whole session (compiling takes a minute)."""
    repo = tmp_path_factory.mktemp("aoti-repo")
    derived = derive_folder(tiny_dir, DeriveSpec(compile="aoti"), repo / NAME)
    assert derived.parameters["aoti_batch"] == "1..64"
    return repo


async def test_aoti_package_serves_batch_32_equal_to_the_parent(
    aoti_repo: Path, inference_server, stub_for
) -> None:
    config = read_config(aoti_repo / NAME)
    assert config is not None and config.platform == "torch_aoti"
    app = await inference_server(aoti_repo)
    stub = stub_for(app.address)
    x = inputs(32)
    want = expected(x)
    # One request of batch 32, then 32 requests of one row that the batcher joins.
    answer = await stub.ModelInfer(raw_request(NAME, {"INPUT": ("FP32", x)}), timeout=30)
    np.testing.assert_allclose(output(answer, "OUTPUT", np.float32), want, rtol=1e-4, atol=1e-5)
    answers = await asyncio.gather(
        *(
            stub.ModelInfer(raw_request(NAME, {"INPUT": ("FP32", x[i : i + 1])}), timeout=30)
            for i in range(32)
        )
    )
    rows = np.concatenate([output(a, "OUTPUT", np.float32) for a in answers])
    np.testing.assert_allclose(rows, want, rtol=1e-4, atol=1e-5)
    stats = (await stub.ModelStatistics(pb.ModelStatisticsRequest(name=NAME))).model_stats[0]
    assert stats.inference_count == 64
    assert stats.execution_count < 33  # the single-row requests ran batched


def holding(root: Path, secrets: list[bytes]) -> list[Path]:
    """Files under `root` holding a 64-byte stretch of a secret (sampled every 4 KiB)."""
    stretches = [b[i : i + 64] for b in secrets for i in range(0, len(b) - 64, 4096)]
    found = []
    for path in root.rglob("*"):
        try:
            data = path.read_bytes() if path.is_file() else b""
        except OSError:  # another test's file, removed meanwhile
            continue
        if any(s in data for s in stretches):
            found.append(path)
    return found


async def test_an_aoti_package_is_served_from_the_encrypted_cache(
    aoti_repo: Path,
    tmp_path: Path,
    inference_server,
    stub_for,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replica starting while its registry is down serves what its encrypted cache
    last held. The package's shared library must be a file to be loaded: it is
    decrypted into a private tmpfs folder, where torch unpacks it too (not under
    TMPDIR), and the folder is gone once the library is loaded."""
    package = aoti_repo / NAME / "1" / "model.pt2"
    with zipfile.ZipFile(package) as pt2:  # the compiled library and its C++ sources
        native = [pt2.read(n) for n in pt2.namelist() if n.endswith((".so", ".cpp"))]
    assert sum(map(len, native)) > 1 << 20
    # The stored archive a derive job's upload becomes, sealed into the cache as a
    # download is (the registry keeps native code only from its own derive workers).
    tar = tmp_path / "model.tar"
    archive.pack_directory(aoti_repo / NAME, tar)
    stored = archive_checks.prepare(
        tar, NAME, tmp_path / "work", tmp_path / "stored.tar", 1 << 26, allow_native=True
    )
    kek = tmp_path / "kek.yaml"
    kek.write_text(
        yaml.safe_dump({"active": "i1", "keys": {"i1": base64.b64encode(new_key()).decode()}})
    )
    cache_dir = tmp_path / "cache"
    cache = ArtifactCache(cache_dir, sealing_of(kek))
    writer = cache.writer()
    writer.write(stored.path.read_bytes())
    cache.adopt_written(writer, stored.sha256)
    cache.remember({NAME: [Artifact(NAME, 1, stored.sha256)]})
    for leftover in (tar, stored.path):
        leftover.unlink()
    with socket.socket() as s:  # a port nobody listens on: the registry is down
        s.bind(("127.0.0.1", 0))
        registry = f"127.0.0.1:{s.getsockname()[1]}"
    tmpdir = tmp_path / "tmpdir"  # where torch's loader unpacks by default
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    in_memory_before = set(MEMORY_ROOT.glob("modelport-*"))

    app = await inference_server(
        None, registry=registry, models=[f"{NAME}@production"], cache_dir=cache_dir, kek_file=kek
    )
    stub = stub_for(app.address)
    x = inputs(8)
    answer = await stub.ModelInfer(raw_request(NAME, {"INPUT": ("FP32", x)}), timeout=30)
    np.testing.assert_allclose(
        output(answer, "OUTPUT", np.float32), expected(x), rtol=1e-4, atol=1e-5
    )

    archives = [p for p in cache_dir.rglob("*.tar")]
    assert archives and all(is_sealed(p) for p in archives)
    assert holding(cache_dir, native) == []
    assert holding(tmpdir, native) == [] and list(tmpdir.iterdir()) == []
    assert os.environ["TMPDIR"] == str(tmpdir)  # pointed at the tmpfs folder for the load only
    for folder in set(MEMORY_ROOT.glob("modelport-*")) - in_memory_before:
        assert holding(folder, native) == []  # the load's folder is gone


def test_registry_refuses_an_aoti_package_pushed_by_hand(aoti_repo: Path, tmp_path: Path) -> None:
    tar = tmp_path / "model.tar"
    archive.pack_directory(aoti_repo / NAME, tar)
    with pytest.raises(InvalidInput, match=r"compiled native code.*derive jobs"):
        archive_checks.prepare(tar, NAME, tmp_path / "work", tmp_path / "out.tar", 1 << 26)
    # From the registry's own derive worker it is stored (checked for shape, not loaded).
    shutil.rmtree(tmp_path / "work", ignore_errors=True)
    prepared = archive_checks.prepare(
        tar, NAME, tmp_path / "work2", tmp_path / "out.tar", 1 << 26, allow_native=True
    )
    assert prepared.signature.platform == "torch_aoti"
