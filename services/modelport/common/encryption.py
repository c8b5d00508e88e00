"""Encryption at rest from a service's `--kek-file`: the keyring file (a Secret),
re-read when it changes so a rotated KEK is used without a restart."""

from __future__ import annotations

from pathlib import Path

from modelport.artifacts.keyring import Keyring
from modelport.artifacts.sealed_files import SealedFiles
from modelport.auth.files import WatchedFile


def sealing_of(kek_file: Path | None) -> SealedFiles | None:
    """Sealed files under the keyring in `kek_file`; None: no encryption."""
    if kek_file is None:
        return None
    return SealedFiles(WatchedFile(kek_file, Keyring.parse).get)
