"""A stored archive (see `archive`) kept sealed on disk and read in memory only.

The inference service's artifact cache keeps encrypted archives as they are;
instead of unpacking one into a plaintext model folder it serves from this:
the config text, the version folder's file names, and each file as a seekable
reader that decrypts as the loader reads (`loaders` take file objects).
"""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from modelport.artifacts.archive import CONFIG, VERSION_DIR
from modelport.artifacts.sealed_files import SealedFiles
from modelport.errors import DataLoss, InvalidInput


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
