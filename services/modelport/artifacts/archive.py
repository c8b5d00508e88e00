"""The stored archive format of a model version, and a local folder packed for upload.

The stored form is a deterministic, uncompressed tar with `config.pbtxt` at
the root and the version folder's files under `version/`; `materialize`
turns it back into `<dir>/config.pbtxt` + `<dir>/<N>/…` for any version N.
`pack_directory` tars a local Triton model folder as `models push` sends it.
Uploads are checked and rewritten into the stored form by `archive_checks`.
torch-free: the SDK pulls and pushes with this module.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from modelport.artifacts.config import CONFIG_FILE
from modelport.errors import InvalidInput

CONFIG = CONFIG_FILE
VERSION_DIR = "version"
MODEL_FILES = ("model.pt2", "model.pt")


def member_path(member: tarfile.TarInfo) -> PurePosixPath | None:
    """The member's path inside the archive, or None for the root itself."""
    name = member.name
    if name.startswith("/") or "\\" in name:
        raise InvalidInput(f"archive member '{name}': absolute or non-POSIX path")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts:
        raise InvalidInput(f"archive member '{name}': path escapes the model folder")
    return PurePosixPath(*parts) if parts else None


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def materialize(stored: Path, model_dir: Path, version: int) -> Path:
    """Unpack a stored archive as a Triton model folder with version folder `version`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(stored, "r:") as tar:
        for member in tar:
            rel = member_path(member)
            if rel is None or not member.isfile():
                continue
            parts = list(rel.parts)
            if parts[0] == VERSION_DIR:
                parts[0] = str(version)
            target = model_dir.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            with source, target.open("wb") as f:
                shutil.copyfileobj(source, f)
    return model_dir


def pack_directory(model_dir: Path, out: io.BufferedIOBase | Path, *, gzip: bool = False) -> None:
    """Tar a local model folder (what `models push` sends); refuses symlinks and a
    folder with neither a config.pbtxt nor a `.pt2` to complete one from."""
    model_dir = Path(model_dir)
    exported = [model_dir / "model.pt2", *model_dir.glob("[0-9]*/model.pt2")]
    if not (model_dir / CONFIG).is_file() and not any(p.is_file() for p in exported):
        raise InvalidInput(
            f"'{model_dir}' has no {CONFIG} (only a torch.export model.pt2, flat or in a "
            "version folder, may come without one: its config is taken from the program)"
        )
    mode = "w:gz" if gzip else "w"
    kwargs: dict[str, Any] = {"fileobj": out} if not isinstance(out, Path) else {"name": out}
    with tarfile.open(mode=mode, format=tarfile.PAX_FORMAT, **kwargs) as tar:  # type: ignore[call-overload]
        for path in sorted(model_dir.rglob("*")):
            rel = path.relative_to(model_dir).as_posix()
            if path.is_symlink():
                raise InvalidInput(f"'{path}': symlinks are not pushed")
            if path.is_file():
                tar.add(path, arcname=rel, recursive=False)
