"""Stored archives kept sealed on disk: the config, file names and models read by
the real safe loaders straight from the decrypting reader."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from modelport.artifacts.archive import pack_directory
from modelport.artifacts.archive_checks import prepare
from modelport.artifacts.keyring import Keyring, new_key
from modelport.artifacts.loaders import load_exported_module, load_torchscript
from modelport.artifacts.sealed_archives import SealedArchive
from modelport.artifacts.sealed_files import SealedFiles
from modelport.errors import DataLoss, InvalidInput


@pytest.fixture(scope="module")
def sealing() -> SealedFiles:
    ring = Keyring({"k1": new_key()}, "k1")
    return SealedFiles(lambda: ring, chunk_bytes=64 * 1024)


def sealed_archive(
    sample_repo: Path, model: str, tmp_path: Path, sealing: SealedFiles
) -> SealedArchive:
    upload = tmp_path / f"{model}.upload.tar"
    pack_directory(sample_repo / model, upload)
    stored = tmp_path / f"{model}.stored.tar"
    prepare(upload, model, tmp_path / f"{model}-work", stored, 1 << 30)
    sealed = tmp_path / f"{model}.sealed"
    sealing.seal(stored, sealed)
    stored.unlink()
    upload.unlink()
    return SealedArchive(sealed, sealing)


def test_models_load_from_sealed_archives(
    sample_repo: Path, tmp_path: Path, sealing: SealedFiles
) -> None:
    mlp = sealed_archive(sample_repo, "mlp", tmp_path, sealing)
    simple = sealed_archive(sample_repo, "simple", tmp_path, sealing)
    assert "platform" in mlp.config_text() and mlp.files() == ["model.pt2"]
    assert simple.files() == ["model.pt"]
    with mlp.open("model.pt2") as f:
        program = load_exported_module(f, "mlp")
    with simple.open("model.pt") as f:
        script = load_torchscript(f, "simple")
    x = torch.rand(3, 256)
    expected = load_exported_module(sample_repo / "mlp" / "1" / "model.pt2", "mlp")(x)
    assert torch.equal(program(x), expected)
    a = torch.ones(1, 16, dtype=torch.int32)
    assert torch.equal(script(a, a)[0], a * 2)


def test_loaders_refuse_pickles_given_as_file_objects(tmp_path: Path) -> None:
    pickled = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), pickled)
    pickled.name = "model.pt"  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match="pickled module, not TorchScript"):
        load_torchscript(pickled, "m")
    with pytest.raises(InvalidInput, match=r"not a torch\.export archive"):
        load_exported_module(io.BytesIO(b"not a zip"), "m")


def test_a_damaged_or_foreign_sealed_file_is_reported(tmp_path: Path, sealing: SealedFiles) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"not a tar archive at all" * 100)
    sealing.seal(plain, tmp_path / "junk.sealed")
    with pytest.raises(DataLoss, match="not a stored archive"):
        SealedArchive(tmp_path / "junk.sealed", sealing).files()
