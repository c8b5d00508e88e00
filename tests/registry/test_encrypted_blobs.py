"""Registry blobs encrypted at rest: unreadable on disk, served as the plaintext
they hash to, re-wrapped on KEK rotation without touching a blob, tampering
detected, and plaintext blobs from before encryption sealed in place."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from modelport.artifacts.archive import pack_directory
from modelport.artifacts.keyring import Keyring, new_key
from modelport.artifacts.sealed_files import SealedFiles, is_sealed, key_path
from modelport.auth.files import WatchedFile
from modelport.errors import DataLoss, FailedPrecondition
from modelport.registry.records import NewVersion
from modelport.registry.store import RegistryStore

MAX_UPLOAD = 8 * 1024 * 1024


def write_keyring(path: Path, active: str, keys: dict[str, bytes]) -> Path:
    encoded = {k: base64.b64encode(v).decode() for k, v in keys.items()}
    path.write_text(yaml.safe_dump({"active": active, "keys": encoded}))
    return path


class Encrypted:
    def __init__(self, tmp_path: Path) -> None:
        self.keys = {"k1": new_key()}
        self.kek_file = write_keyring(tmp_path / "kek.yaml", "k1", self.keys)
        self.keyring = WatchedFile(self.kek_file, Keyring.parse)
        self.sealing = SealedFiles(self.keyring.get, chunk_bytes=64 * 1024)
        self.scratch = tmp_path / "scratch"
        self.store = RegistryStore.open(
            f"sqlite:///{tmp_path / 'registry.db'}",
            tmp_path / "blobs",
            max_upload_bytes=MAX_UPLOAD,
            sealing=self.sealing,
            scratch_dir=self.scratch,
        )

    def push(self, model_dir: Path, name: str) -> tuple[str, bytes]:
        archive = model_dir.parent / f"{model_dir.name}.tar"
        pack_directory(model_dir, archive)
        new = NewVersion(name, create_model=True)
        sink = self.store.begin_upload(new)
        sink.write(archive.read_bytes())
        info = self.store.finish_upload(sink, new, "")
        return info.sha256, b"".join(self.store.open_download(f"{name}:{info.version}", 1 << 16)[1])


def blob_file(store: RegistryStore, sha: str) -> Path:
    return store.blobs.root / store.blobs.name(sha)


@pytest.fixture
def encrypted(tmp_path: Path) -> Iterator[Encrypted]:
    setup = Encrypted(tmp_path)
    yield setup
    setup.store.close()


def test_blobs_are_ciphertext_on_disk_and_plaintext_on_download(
    encrypted: Encrypted, make_model: Callable[..., Path]
) -> None:
    model_dir = make_model("scale", 2.0)
    weights = (model_dir / "1" / "model.pt2").read_bytes()
    sha, downloaded = encrypted.push(model_dir, "scale")
    blob = blob_file(encrypted.store, sha)
    on_disk = blob.read_bytes()
    assert is_sealed(blob) and key_path(blob).read_text().startswith("v1.k1.")
    assert hashlib.sha256(downloaded).hexdigest() == sha
    assert hashlib.sha256(on_disk).hexdigest() != sha
    # No run of the model's bytes (nor the config text) is readable in the stored file.
    assert all(weights[i : i + 64] not in on_disk for i in range(0, len(weights) - 64, 4096))
    assert b"torch_export" not in on_disk
    assert list(encrypted.scratch.iterdir()) == []  # plaintext scratch cleaned up
    assert list(encrypted.store.blobs.stored()) == [sha]  # .key files are not blobs


def test_rotation_rewraps_keys_without_touching_blobs(
    encrypted: Encrypted, make_model: Callable[..., Path]
) -> None:
    sha, before = encrypted.push(make_model("scale", 2.0), "scale")
    blob = blob_file(encrypted.store, sha)
    blob_digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    write_keyring(encrypted.kek_file, "k2", {**encrypted.keys, "k2": new_key()})
    assert encrypted.keyring.reload()
    assert encrypted.store.blobs.rewrap() == 1
    assert encrypted.store.blobs.rewrap() == 0  # already under k2
    assert key_path(blob).read_text().startswith("v1.k2.")
    new_keys = yaml.safe_load(encrypted.kek_file.read_text())["keys"]
    del new_keys["k1"]  # the old KEK retired
    encrypted.kek_file.write_text(yaml.safe_dump({"active": "k2", "keys": new_keys}))
    assert encrypted.keyring.reload()
    assert b"".join(encrypted.store.open_download("scale:1", 1 << 16)[1]) == before
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob_digest
    # A second model pushed now is wrapped under k2 from the start.
    sha2, _ = encrypted.push(make_model("other", 3.0), "other")
    assert key_path(blob_file(encrypted.store, sha2)).read_text().startswith("v1.k2.")


def test_a_tampered_blob_is_refused_on_download(
    encrypted: Encrypted, make_model: Callable[..., Path]
) -> None:
    sha, _ = encrypted.push(make_model("scale", 2.0), "scale")
    blob = blob_file(encrypted.store, sha)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(DataLoss, match="failed its integrity check"):
        b"".join(encrypted.store.open_download("scale:1", 1 << 16)[1])
    key_path(blob).unlink()
    with pytest.raises(DataLoss, match="key file is missing"):
        b"".join(encrypted.store.open_download("scale:1", 1 << 16)[1])


def test_plaintext_blobs_from_before_are_sealed_in_place(
    tmp_path: Path, make_model: Callable[..., Path]
) -> None:
    plain_store = RegistryStore.open(
        f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "blobs", max_upload_bytes=MAX_UPLOAD
    )
    archive = tmp_path / "m.tar"
    pack_directory(make_model("scale", 2.0), archive)
    new = NewVersion("scale", create_model=True)
    sink = plain_store.begin_upload(new)
    sink.write(archive.read_bytes())
    sha = plain_store.finish_upload(sink, new, "").sha256
    plain_store.close()
    with pytest.raises(FailedPrecondition, match="--kek-file"):
        plain_store.blobs.rewrap()

    encrypted = Encrypted(tmp_path)  # the same database and blob dir, now with a keyring
    try:
        before = b"".join(encrypted.store.open_download("scale:1", 1 << 16)[1])  # still readable
        assert encrypted.store.blobs.seal_plaintext() == 1
        assert encrypted.store.blobs.seal_plaintext() == 0
        assert is_sealed(blob_file(encrypted.store, sha))
        assert b"".join(encrypted.store.open_download("scale:1", 1 << 16)[1]) == before
        assert hashlib.sha256(before).hexdigest() == sha
    finally:
        encrypted.store.close()
