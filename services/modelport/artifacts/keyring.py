"""Key-encryption keys (KEKs) and the data keys they wrap.

Every blob gets its own random 256-bit data key (DEK); the DEK is stored only
wrapped — AES-GCM-encrypted under a KEK, with the KEK's id bound in as
associated data. The KEKs live in a file (a Kubernetes Secret):

    active: 2026-11          # new data keys are wrapped under this one
    keys:
      2026-10: <base64 of 32 random bytes>
      2026-11: <base64 of 32 random bytes>

or, for a single key, a file holding just its base64 (its id is then its
fingerprint). Rotation: add a key and make it active, `rewrap` the stored
wrapped DEKs (small, no blob is read or written again), then drop the old key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from modelport.errors import DataLoss, FailedPrecondition, InvalidInput

KEY_BYTES = 32
NONCE_BYTES = 12
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_WRAP_CONTEXT = b"modelport/data-key/v1|"
_FORMAT = "v1"


def new_key() -> bytes:
    """256 random bits: a fresh KEK (for the file) or data key."""
    return AESGCM.generate_key(bit_length=256)


def fingerprint(key: bytes) -> str:
    return "fp-" + hashlib.sha256(b"modelport/kek-id|" + key).hexdigest()[:16]


@dataclass(frozen=True)
class WrappedKey:
    """A data key encrypted under the KEK `kek_id`; `to_text()` is its stored form."""

    kek_id: str
    nonce: bytes
    ciphertext: bytes

    def to_text(self) -> str:
        blob = base64.urlsafe_b64encode(self.nonce + self.ciphertext).decode()
        return f"{_FORMAT}.{self.kek_id}.{blob}"

    @classmethod
    def from_text(cls, text: str) -> WrappedKey:
        try:
            version, kek_id, blob = text.split(".")
            raw = base64.urlsafe_b64decode(blob)
        except (ValueError, binascii.Error):
            raise DataLoss("a wrapped data key is malformed") from None
        if version != _FORMAT or not _ID.match(kek_id) or len(raw) != NONCE_BYTES + KEY_BYTES + 16:
            raise DataLoss("a wrapped data key is malformed")
        return cls(kek_id, raw[:NONCE_BYTES], raw[NONCE_BYTES:])


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: not base64") from None
    if len(key) != KEY_BYTES:
        raise InvalidInput(f"{where}: a key is {KEY_BYTES} bytes (base64 of 32 random bytes)")
    return key


class Keyring:
    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise InvalidInput(f"keyring: the active key '{active}' is not among its keys")
        for kek_id, key in keys.items():
            if not _ID.match(kek_id):
                raise InvalidInput(f"keyring: key id '{kek_id}' must match [A-Za-z0-9_-]{{1,64}}")
            if len(key) != KEY_BYTES:
                raise InvalidInput(f"keyring: key '{kek_id}' is not {KEY_BYTES} bytes")
        self._keys = {kek_id: AESGCM(key) for kek_id, key in keys.items()}
        self.active_id = active

    @property
    def ids(self) -> list[str]:
        return sorted(self._keys)

    @classmethod
    def parse(cls, data: bytes) -> Keyring:
        text = data.decode("ascii", errors="replace").strip()
        if "\n" not in text and ":" not in text:
            key = _decode_key(text, "keyring")
            return cls({fingerprint(key): key}, fingerprint(key))
        document = yaml.safe_load(text)
        if not isinstance(document, Mapping) or not isinstance(document.get("keys"), Mapping):
            raise InvalidInput(
                "keyring: 'active: ID' and 'keys: {ID: base64, …}', or one base64 key"
            )
        keys = {
            str(k): _decode_key(str(v), f"keyring key '{k}'") for k, v in document["keys"].items()
        }
        return cls(keys, str(document.get("active", "")))

    def wrap(self, data_key: bytes) -> WrappedKey:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.active_id].encrypt(nonce, data_key, self._context(self.active_id))
        return WrappedKey(self.active_id, nonce, sealed)

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        kek = self._keys.get(wrapped.kek_id)
        if kek is None:
            raise FailedPrecondition(
                f"the blob's data key is wrapped under KEK '{wrapped.kek_id}', which the "
                f"keyring no longer holds (it has {', '.join(self.ids)})"
            )
        try:
            return kek.decrypt(wrapped.nonce, wrapped.ciphertext, self._context(wrapped.kek_id))
        except InvalidTag:
            raise DataLoss(
                f"a data key wrapped under KEK '{wrapped.kek_id}' failed its integrity check"
            ) from None

    def rewrap(self, wrapped: WrappedKey) -> WrappedKey:
        """The same data key under the active KEK (unchanged if it is already)."""
        if wrapped.kek_id == self.active_id:
            return wrapped
        return self.wrap(self.unwrap(wrapped))

    def new_data_key(self) -> tuple[bytes, WrappedKey]:
        key = new_key()
        return key, self.wrap(key)

    @staticmethod
    def _context(kek_id: str) -> bytes:
        return _WRAP_CONTEXT + kek_id.encode()
