"""API keys: stored as scrypt hashes, verified, expired, reloaded from their file."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import yaml
from modelport.auth.api_keys import (
    ApiKeyStore,
    KeyEntry,
    hash_key,
    key_id,
    key_matches,
    new_key,
    parse_key_file,
)
from modelport.errors import InvalidInput, Unauthenticated

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


def write_keys(path: Path, *entries: KeyEntry) -> Path:
    path.write_text(yaml.safe_dump({"keys": [e.to_yaml_item() for e in entries]}))
    return path


@pytest.fixture(scope="module")
def alice() -> tuple[str, KeyEntry]:
    return new_key("team-a", frozenset({"reader"}))


def test_a_key_verifies_to_its_tenant_and_the_file_never_holds_it(
    tmp_path: Path, alice: tuple[str, KeyEntry]
) -> None:
    key, entry = alice
    path = write_keys(tmp_path / "keys.yaml", entry)
    assert key not in path.read_text() and key.split("_")[-1] not in path.read_text()
    principal = ApiKeyStore(path).verify(key, time.time())
    assert (principal.tenant, principal.method) == ("team-a", "api-key")
    assert principal.subject == f"key:{entry.id}" and principal.roles == {"reader"}


def test_wrong_unknown_and_malformed_keys_get_the_same_answer(
    tmp_path: Path, alice: tuple[str, KeyEntry]
) -> None:
    key, entry = alice
    store = ApiKeyStore(write_keys(tmp_path / "keys.yaml", entry))
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    unknown_id = f"mpk_{'0' * 12}_{key.split('_', 2)[2]}"
    messages = set()
    for candidate in (wrong_secret, unknown_id, "mpk_nothex_secret", "mpk_", "x" * 5000, ""):
        with pytest.raises(Unauthenticated) as error:
            store.verify(candidate, time.time())
        messages.add(str(error.value))
    assert messages == {"invalid credentials"}


def test_an_expired_key_is_refused(tmp_path: Path) -> None:
    key, entry = new_key("team-a", expires_at=float(int(time.time()) + 3600))
    store = ApiKeyStore(write_keys(tmp_path / "keys.yaml", entry))
    assert store.verify(key, time.time()).expires_at == entry.expires_at
    with pytest.raises(Unauthenticated):
        store.verify(key, time.time() + 7200)


def test_expiry_is_read_back_from_iso_text(tmp_path: Path) -> None:
    key, entry = new_key("team-a")
    item = entry.to_yaml_item() | {"expires": "2001-01-01T00:00:00Z"}
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"keys": [item]}))
    with pytest.raises(Unauthenticated):
        ApiKeyStore(tmp_path / "keys.yaml").verify(key, time.time())


def test_hashes_are_salted_and_checked_in_constant_form() -> None:
    first, second = hash_key("mpk_abcdef12_s3cret"), hash_key("mpk_abcdef12_s3cret")
    assert first != second and first.startswith("scrypt$16384$8$1$")
    assert key_matches("mpk_abcdef12_s3cret", first) and key_matches("mpk_abcdef12_s3cret", second)
    assert not key_matches("mpk_abcdef12_s3creT", first)
    assert not key_matches("mpk_abcdef12_s3cret", "scrypt$bad")
    assert key_id("mpk_abcdef12_s3cret") == "abcdef12" and key_id("sk-abc") is None


def test_the_file_is_reloaded_when_it_changes(tmp_path: Path, alice: tuple[str, KeyEntry]) -> None:
    key, entry = alice
    bob_key, bob = new_key("team-b")
    path = write_keys(tmp_path / "keys.yaml", entry)
    store = ApiKeyStore(path)
    with pytest.raises(Unauthenticated):
        store.verify(bob_key, time.time())
    write_keys(path, entry, bob)
    assert store.reload() and store.generation == 1
    assert store.verify(bob_key, time.time()).tenant == "team-b"
    write_keys(path, bob)  # alice's key revoked
    assert store.reload()
    with pytest.raises(Unauthenticated):
        store.verify(key, time.time())


def test_a_broken_edit_keeps_the_previous_keys_in_force(
    tmp_path: Path, alice: tuple[str, KeyEntry], caplog: pytest.LogCaptureFixture
) -> None:
    key, entry = alice
    path = write_keys(tmp_path / "keys.yaml", entry)
    store = ApiKeyStore(path)
    path.write_text("keys: [{id: zz, tenant: x, hash: plain}]\n")
    with caplog.at_level(logging.ERROR):
        assert not store.reload()
        assert not store.reload()  # the same broken file is reported once
    assert len([r for r in caplog.records if "keeping the previous" in r.message]) == 1
    assert store.verify(key, time.time()).tenant == "team-a"


@pytest.mark.parametrize(
    ("document", "fault"),
    [
        ("keys: {a: b}", "keys: ["),
        ("keys: [{id: abcdef12, tenant: t, hash: mpk_abcdef12_secret}]", "never a key"),
        ("keys: [{id: ABC, tenant: t, hash: 'scrypt$1$1$1$a$b'}]", "'id'"),
        ("keys: [{id: abcdef12, hash: 'scrypt$1$1$1$a$b'}]", "'tenant'"),
        (
            "keys: [{id: abcdef12, tenant: t, hash: 'scrypt$1$1$1$a$b'},"
            " {id: abcdef12, tenant: u, hash: 'scrypt$1$1$1$a$b'}]",
            "twice",
        ),
        ("keys: [{id: abcdef12, tenant: t, hash: 'scrypt$1$1$1$a$b', expires: soon}]", "ISO 8601"),
    ],
)
def test_malformed_files_are_rejected_whole(document: str, fault: str) -> None:
    with pytest.raises(InvalidInput, match=fault.replace("[", r"\[").replace("$", r"\$")):
        parse_key_file(document.encode())
