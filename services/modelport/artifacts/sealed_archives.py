"""A stored archive (see `archive`) kept sealed on disk and read in memory only.

The inference service's artifact cache keeps encrypted archives as they are;
instead of unpacking one into a plaintext model folder it serves from this:
the config text, the version folder's file names, and each file as a seekable
reader that decrypts as the loader reads (`loaders` take file objects).
Loaders that only read a folder of files (Hugging Face's, for generative models)
get the version folder unpacked on a memory filesystem (`version_in_memory`,
/dev/shm: tmpfs), removed as soon as the model is loaded, so no plaintext
reaches a disk either.
"""

from __future__ import annotations

import contextlib
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from modelport.artifacts.archive import CONFIG, VERSION_DIR
from modelport.artifacts.sealed_files import SealedFiles
from modelport.errors import DataLoss, FailedPrecondition, InvalidInput

# Where a version a loader must read as files is unpacked (memory, in a pod: an
# emptyDir with medium Memory mounted there when the default 64 MiB is too small).
MEMORY_ROOT = Path("/dev/shm")
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


class SealedArchive:
    def __init__(self, path: Path, sealing: SealedFiles) -> None:
        self.path = path
        self.sealing = sealing

    @contextlib.contextmanager
    def _tar(self) -> Iterator[tarfile.TarFile]:
        with self.sealing.open(self.path) as reader:
            try:
                tar = tarfile.open(fileobj=reader, mode="r:")  # noqa: SIM115 (closed below)
            except tarfile.TarError as exc:
                raise DataLoss(f"{self.path.name}: not a stored archive: {exc}") from None
            with tar:
                yield tar

    def members(self) -> list[str]:
        with self._tar() as tar:
            return [m.name for m in tar.getmembers() if m.isfile()]

    def config_text(self) -> str:
        with self.open_member(CONFIG) as f:
            return f.read().decode("utf-8")

    def files(self) -> list[str]:
        """Names of the files in the version folder (`model.pt2`, …)."""
        prefix = PurePosixPath(VERSION_DIR)
        return sorted(
            str(PurePosixPath(name).relative_to(prefix))
            for name in self.members()
            if PurePosixPath(name).parts[:1] == (VERSION_DIR,)
        )

    def open(self, filename: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A file of the version folder, decrypted as it is read."""
        return self.open_member(f"{VERSION_DIR}/{filename}")

    @contextlib.contextmanager
    def open_member(self, name: str) -> Iterator[IO[bytes]]:
        with self._tar() as tar:
            try:
                member = tar.getmember(name)
            except KeyError:
                raise InvalidInput(f"{self.path.name}: the archive has no {name}") from None
            extracted = tar.extractfile(member)
            if extracted is None:
                raise InvalidInput(f"{self.path.name}: {name} is not a file")
            with extracted:
                yield extracted

    @contextlib.contextmanager
    def version_in_memory(self, root: Path = MEMORY_ROOT) -> Iterator[Path]:
        """The version folder's files, decrypted into a private folder on a memory
        filesystem for as long as the block runs (a loader reads them there)."""
        if not memory_backed(root):
            raise FailedPrecondition(
                f"{self.path.name}: this model is loaded from a folder of files, and "
                f"{root} is not a memory filesystem to decrypt it into"
            )
        folder = Path(tempfile.mkdtemp(prefix="modelport-", dir=root))  # mode 0700
        try:
            try:
                self._unpack_version(folder)
            except OSError as exc:
                raise FailedPrecondition(
                    f"{self.path.name}: cannot decrypt into {root} ({exc.strerror or exc}); "
                    "give it more room (a larger memory volume)"
                ) from None
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _unpack_version(self, folder: Path) -> None:
        prefix = PurePosixPath(VERSION_DIR)
        with self._tar() as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or parts[:1] != prefix.parts or ".." in parts:
                    continue
                target = folder.joinpath(*parts[1:])
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)


def memory_backed(path: Path) -> bool:
    """Whether `path` lies on a memory filesystem (its mount in /proc/self/mounts)."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
        resolved = str(path.resolve(strict=True))
    except OSError:
        return False
    mount_point, kind = "", ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(mount_point):
            mount_point, kind = mount, fields[2]
    return kind in MEMORY_FILESYSTEMS
