"""`modelport keys`: API keys whose hash lands in the key file, KEKs added to a
keyring, and re-wrapping after a rotation, with the real CLI."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from modelport.artifacts.keyring import Keyring
from modelport.artifacts.sealed_files import SealedFiles, key_path
from modelport.auth.api_keys import ApiKeyStore
from modelport.cli import main
from modelport.registry.blobs import BlobStore

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


def test_api_keys_are_printed_once_and_stored_hashed(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    runner = CliRunner()
    made = [
        runner.invoke(
            main, ["keys", "api-key", "--tenant", t, "--role", "reader", "--file", str(path)]
        )
        for t in ("team-a", "team-b")
    ]
    assert all(r.exit_code == 0 for r in made), [r.output for r in made]
    key = made[0].stdout.strip().splitlines()[-1]
    assert key.startswith("mpk_") and key not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    principal = ApiKeyStore(path).verify(key, time.time())
    assert (principal.tenant, principal.roles) == ("team-a", {"reader"})
    assert len(yaml.safe_load(path.read_text())["keys"]) == 2


def test_a_kek_rotation_with_the_cli(tmp_path: Path) -> None:
    kek_file = tmp_path / "kek.yaml"
    runner = CliRunner()
    assert (
        runner.invoke(main, ["keys", "kek", "--file", str(kek_file), "--id", "k1"]).exit_code == 0
    )
    keyring = Keyring.parse(kek_file.read_bytes())
    store = BlobStore(tmp_path / "blobs", sealing=SealedFiles(lambda: keyring))
    plain = tmp_path / "blob"
    plain.write_bytes(b"model" * 1000)
    import hashlib

    sha = hashlib.sha256(plain.read_bytes()).hexdigest()
    store.place(store.make_durable(plain), sha)
    assert key_path(store.root / store.name(sha)).read_text().startswith("v1.k1.")
    rotated = runner.invoke(main, ["keys", "kek", "--file", str(kek_file), "--id", "k2"])
    assert rotated.exit_code == 0 and "active: 'k2'" in rotated.output
    done = runner.invoke(
        main, ["keys", "rewrap", "--blob-dir", str(tmp_path / "blobs"), "--kek-file", str(kek_file)]
    )
    assert done.exit_code == 0 and "1 data keys re-wrapped" in done.output, done.output
    assert key_path(store.root / store.name(sha)).read_text().startswith("v1.k2.")
    again = runner.invoke(main, ["keys", "kek", "--file", str(kek_file), "--id", "k2"])
    assert again.exit_code != 0 and "already has a key 'k2'" in again.output
