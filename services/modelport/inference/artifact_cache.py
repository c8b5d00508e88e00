"""Local cache of registry artifacts, keyed by sha256, kept across restarts.

    <root>/archives/<sha256>.tar         stored archives, verified before adoption
    <root>/models/<name>/<key>/          Triton folders built from them (key: versions + shas)
    <root>/state.json                    what each followed reference last resolved to

Writes go to a temp name and are renamed into place, so a crash never leaves a
half-written archive or folder under a final name; the workers of one server
may share a cache. An archive is re-hashed the first time a process reuses it.

With a keyring (`--kek-file`) archives are kept sealed (`<sha256>.tar` encrypted,
`<sha256>.tar.key` its wrapped data key): the download is sealed as it arrives,
no model folder is built, and models are loaded from the sealed archive in
memory (`sealed_archives`), so no plaintext model file is ever on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modelport.artifacts import sealed_files
from modelport.artifacts.archive import materialize
from modelport.artifacts.hashing import sha256_of
from modelport.artifacts.sealed_archives import SealedArchive
from modelport.artifacts.sealed_files import SealedFiles, SealedFileWriter, is_sealed
from modelport.errors import FailedPrecondition, InvalidInput, ModelportError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """One version of a model as the registry resolved it."""

    model: str
    version: int
    sha256: str


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _PlainWriter:
    """A download written as it comes, hashed on the way (no keyring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("xb")
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._digest.update(data)
        self._file.write(data)

    def finish(self) -> str:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._digest.hexdigest()

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class ArtifactCache:
    def __init__(self, root: Path | str, sealing: SealedFiles | None = None) -> None:
        self.root = Path(root)
        self.sealing = sealing
        self.archives = self.root / "archives"
        self.models = self.root / "models"
        self.tmp = self.root / "tmp"
        for folder in (self.archives, self.models, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self._clear_dead_temps()
        self._verified: set[str] = set()

    def _clear_dead_temps(self) -> None:
        """Remove temp entries of processes that are gone (they died mid-write).

        Several workers of one server may share the cache, so entries of a
        live process stay.
        """
        for leftover in self.tmp.iterdir():
            pid = leftover.name.partition("-")[0]
            if pid.isdigit() and _alive(int(pid)):
                continue
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    def archive_path(self, sha256: str) -> Path:
        return self.archives / f"{sha256}.tar"

    def has(self, sha256: str) -> bool:
        """The archive is here and hashes to its name (a corrupt one is removed)."""
        path = self.archive_path(sha256)
        if sha256 in self._verified:
            return path.is_file()
        if not path.is_file():
            return False
        if self._hash(path) != sha256:  # a sealed one decrypted (and authenticated)
            log.warning("cached archive %s is corrupt; fetching it again", sha256)
            sealed_files.remove(path)  # and its key, when sealed
            return False
        self._verified.add(sha256)
        return True

    def temp_path(self) -> Path:
        return self.tmp / f"{os.getpid()}-{uuid.uuid4().hex}"

    def _hash(self, path: Path) -> str:
        """The plaintext's sha256, decrypting a sealed archive (a plaintext one left
        from before encryption was on is fetched again, so the cache ends up sealed)."""
        if self.sealing is not None:
            try:
                return self.sealing.sha256(path) if is_sealed(path) else ""
            except ModelportError as exc:  # DataLoss, or a KEK no longer held
                log.warning("cached archive %s cannot be read: %s", path.name, exc)
                return ""
        return "" if is_sealed(path) else sha256_of(path)

    def writer(self) -> SealedFileWriter | _PlainWriter:
        """Where a download goes: sealed as it is written when there is a keyring."""
        temp = self.temp_path()
        return self.sealing.create(temp) if self.sealing is not None else _PlainWriter(temp)

    def adopt_written(self, writer: SealedFileWriter | _PlainWriter, sha256: str) -> Path:
        """Move a finished download into the cache if its plaintext hashes to `sha256`."""
        try:
            actual = writer.finish()
        except BaseException:
            writer.discard()
            raise
        if actual != sha256:
            writer.discard()
            raise InvalidInput(f"downloaded archive hashes to {actual}, expected {sha256}")
        final = self.archive_path(sha256)
        sealed_files.move(writer.path, final)
        self._verified.add(sha256)
        return final

    def sealed_archives(self, artifacts: Sequence[Artifact]) -> dict[int, SealedArchive]:
        """Each artifact's sealed archive by version, for loading in memory."""
        assert self.sealing is not None
        return {
            a.version: SealedArchive(self.archive_path(a.sha256), self.sealing) for a in artifacts
        }

    def adopt(self, temp: Path, sha256: str) -> Path:
        """Move a downloaded file into the cache if it hashes to `sha256`."""
        actual = sha256_of(temp)
        if actual != sha256:
            temp.unlink(missing_ok=True)
            raise InvalidInput(f"downloaded archive hashes to {actual}, expected {sha256}")
        with temp.open("rb") as f:
            os.fsync(f.fileno())
        final = self.archive_path(sha256)
        os.replace(temp, final)
        self._verified.add(sha256)
        return final

    def model_dir(self, name: str, artifacts: Sequence[Artifact]) -> Path:
        """A Triton folder serving `artifacts` (config from the first), built once.
        Never with a keyring: that would put the plaintext on disk."""
        if self.sealing is not None:
            raise FailedPrecondition("encrypted archives are loaded in memory, not unpacked")
        key = "_".join(
            f"{a.version}-{a.sha256[:16]}" for a in sorted(artifacts, key=lambda a: a.version)
        )
        final = self.models / name / key
        if final.is_dir():
            return final
        building = self.temp_path()
        # Later artifacts first, so the first one's config.pbtxt is the one left.
        for artifact in reversed(artifacts):
            materialize(self.archive_path(artifact.sha256), building, artifact.version)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(building, final)
        except OSError:  # built meanwhile by someone else: theirs is as good
            shutil.rmtree(building, ignore_errors=True)
        return final

    def prune(self, name: str, keep: Sequence[Path]) -> None:
        """Remove built folders of `name` other than `keep` (archives stay for rollbacks)."""
        folder = self.models / name
        if not folder.is_dir():
            return
        for entry in folder.iterdir():
            if entry not in keep:
                shutil.rmtree(entry, ignore_errors=True)

    # -- what each reference resolved to (for a start while the registry is down) --

    def recall(self) -> dict[str, list[Artifact]]:
        path = self.root / "state.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return {
            model: [Artifact(model, int(a["version"]), str(a["sha256"])) for a in items]
            for model, items in data.items()
        }

    def remember(self, serving: dict[str, list[Artifact]]) -> None:
        path = self.root / "state.json"
        temp = self.temp_path()
        data = {
            model: [{"version": a.version, "sha256": a.sha256} for a in items]
            for model, items in serving.items()
        }
        temp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(temp, path)
