"""Envelope encryption: data keys wrapped by KEKs from a file, re-wrapped on
rotation without touching the blob."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
import yaml
from modelport.artifacts.keyring import Keyring, WrappedKey, fingerprint, new_key
from modelport.artifacts.sealed_blobs import SealingWriter, open_sealed
from modelport.errors import DataLoss, FailedPrecondition, InvalidInput

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


def keyring_file(path: Path, active: str, **keys: bytes) -> Path:
    document = {
        "active": active,
        "keys": {k: base64.b64encode(v).decode() for k, v in keys.items()},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_data_key_round_trips_through_its_wrapped_text_form() -> None:
    ring = Keyring({"k1": new_key()}, "k1")
    key, wrapped = ring.new_data_key()
    text = wrapped.to_text()
    assert text.startswith("v1.k1.") and base64.urlsafe_b64encode(key).decode() not in text
    assert ring.unwrap(WrappedKey.from_text(text)) == key
    assert ring.wrap(key) != wrapped  # a fresh nonce every time


def test_rotation_rewraps_without_touching_the_blob(tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    before = Keyring.parse(
        keyring_file(tmp_path / "a.yaml", "2026-10", **{"2026-10": old}).read_bytes()
    )
    data_key, wrapped = before.new_data_key()
    blob = tmp_path / "blob"
    with blob.open("wb") as f, SealingWriter(f, data_key, 4096) as writer:
        writer.write(b"model bytes " * 5000)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()

    during = Keyring.parse(
        keyring_file(
            tmp_path / "b.yaml", "2026-11", **{"2026-10": old, "2026-11": new}
        ).read_bytes()
    )
    assert during.unwrap(wrapped) == data_key  # old envelopes still open mid-rotation
    rewrapped = during.rewrap(wrapped)
    assert rewrapped.kek_id == "2026-11" and during.rewrap(rewrapped) is rewrapped

    after = Keyring.parse(
        keyring_file(tmp_path / "c.yaml", "2026-11", **{"2026-11": new}).read_bytes()
    )
    with pytest.raises(
        FailedPrecondition, match="KEK '2026-10', which the keyring no longer holds"
    ):
        after.unwrap(wrapped)
    with open_sealed(blob, after.unwrap(rewrapped)) as reader:
        assert reader.read() == b"model bytes " * 5000
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest


def test_a_wrapped_key_is_bound_to_its_kek_and_tampering_shows() -> None:
    shared = new_key()
    ring = Keyring({"k1": shared, "k2": shared}, "k1")
    wrapped = ring.wrap(new_key())
    relabelled = WrappedKey("k2", wrapped.nonce, wrapped.ciphertext)  # same key bytes, other id
    with pytest.raises(DataLoss):
        ring.unwrap(relabelled)
    flipped = WrappedKey(
        "k1", wrapped.nonce, bytes([wrapped.ciphertext[0] ^ 1]) + wrapped.ciphertext[1:]
    )
    with pytest.raises(DataLoss):
        ring.unwrap(flipped)
    for text in ("", "v1.k1", "v2.k1.AAAA", "v1.k1.!!!", "v1.bad id." + "A" * 80, "v1.k1.AAAA"):
        with pytest.raises(DataLoss):
            WrappedKey.from_text(text)


def test_a_file_with_one_bare_key_is_named_by_its_fingerprint(tmp_path: Path) -> None:
    key = new_key()
    ring = Keyring.parse(base64.b64encode(key) + b"\n")
    assert ring.active_id == fingerprint(key) and ring.ids == [fingerprint(key)]
    assert ring.unwrap(ring.wrap(b"k" * 32)) == b"k" * 32


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        (b"active: a\nkeys: {b: " + base64.b64encode(b"x" * 32) + b"}", "active key 'a'"),
        (b"active: a\nkeys: {a: " + base64.b64encode(b"short") + b"}", "32 bytes"),
        (b"active: a\nkeys: {a: not-base64!}", "not base64"),
        (b"active: 'a b'\nkeys: {'a b': " + base64.b64encode(b"x" * 32) + b"}", "must match"),
        (b"keys: [1, 2]", "'active: ID'"),
        (b"c2hvcnQ=", "32 bytes"),
    ],
)
def test_bad_keyring_files_are_rejected(text: bytes, fault: str) -> None:
    with pytest.raises(InvalidInput, match=fault):
        Keyring.parse(text)
