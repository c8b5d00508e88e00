"""API keys, stored only as salted scrypt hashes in a file (a Kubernetes Secret).

A key reads `mpk_<id>_<secret>`: the id is public and says which entry to
check (like a cloud access key id), the secret is 256 random bits. The file
holds, per key, its id, tenant, optional roles and expiry, and
`scrypt$N$r$p$<salt>$<hash>` of the whole key, so a leaked file gives no key.

    keys:
      - id: 3f9a0c1b2d4e
        tenant: team-a
        roles: [reader]
        hash: scrypt$16384$8$1$…$…
        expires: 2027-01-01T00:00:00Z     # optional

scrypt costs tens of milliseconds on purpose; `Authenticator` caches what it
verified, so a key pays it once per process and file version.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from modelport.auth.files import WatchedFile
from modelport.auth.identity import API_KEY_PREFIX, Principal
from modelport.errors import InvalidInput, Unauthenticated

# 16 MiB and ~50 ms per check on one core: OWASP's floor for scrypt.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
_ID = re.compile(r"^[0-9a-f]{8,32}$")
_MAX_KEY_LENGTH = 256


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _scrypt(key: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        key.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20), dklen=32
    )


def hash_key(key: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """The stored form of `key`: `scrypt$N$r$p$<salt b64>$<hash b64>`, fresh salt."""
    salt = secrets.token_bytes(16)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(_scrypt(key, salt, n, r, p))}"


def key_matches(key: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = _scrypt(key, base64.b64decode(salt), int(n), int(r), int(p))
        return hmac.compare_digest(actual, base64.b64decode(digest))
    except ValueError:
        return False


def key_id(key: str) -> str | None:
    """The public id inside a well-formed key, else None."""
    if not key.startswith(API_KEY_PREFIX) or len(key) > _MAX_KEY_LENGTH:
        return None
    ident, sep, secret = key[len(API_KEY_PREFIX) :].partition("_")
    return ident if sep and secret and _ID.match(ident) else None


@dataclass(frozen=True)
class KeyEntry:
    id: str
    tenant: str
    hash: str
    roles: frozenset[str] = frozenset()
    expires_at: float | None = None

    def to_yaml_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.id, "tenant": self.tenant, "hash": self.hash}
        if self.roles:
            item["roles"] = sorted(self.roles)
        if self.expires_at is not None:
            item["expires"] = datetime.fromtimestamp(self.expires_at, UTC).isoformat()
        return item


def new_key(
    tenant: str, roles: frozenset[str] = frozenset(), expires_at: float | None = None
) -> tuple[str, KeyEntry]:
    """A fresh key (shown once to its owner) and the entry that goes in the file."""
    ident = secrets.token_hex(6)
    key = f"{API_KEY_PREFIX}{ident}_{secrets.token_urlsafe(32)}"
    return key, KeyEntry(ident, tenant, hash_key(key), roles, expires_at)


def _expiry(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"{where}: 'expires' is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_key_file(data: bytes) -> dict[str, KeyEntry]:
    """The entries of a key file by id; any malformed entry rejects the whole file."""
    document = yaml.safe_load(data) or {}
    if not isinstance(document, Mapping) or not isinstance(document.get("keys", []), list):
        raise InvalidInput("an API key file holds 'keys: [ {id, tenant, hash, …}, … ]'")
    entries: dict[str, KeyEntry] = {}
    for index, item in enumerate(document.get("keys") or []):
        where = f"keys[{index}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{where}: an entry is a mapping")
        ident, tenant, stored = (str(item.get(k, "")) for k in ("id", "tenant", "hash"))
        if not _ID.match(ident):
            raise InvalidInput(f"{where}: 'id' must be 8-32 lowercase hex digits")
        if not tenant:
            raise InvalidInput(f"{where}: 'tenant' is required")
        if not stored.startswith("scrypt$") or stored.count("$") != 5:
            raise InvalidInput(f"{where}: 'hash' must be scrypt$N$r$p$salt$hash (never a key)")
        if ident in entries:
            raise InvalidInput(f"{where}: id {ident} appears twice")
        roles = item.get("roles") or []
        if not isinstance(roles, list):
            raise InvalidInput(f"{where}: 'roles' is a list")
        entries[ident] = KeyEntry(
            ident, tenant, stored, frozenset(map(str, roles)), _expiry(item.get("expires"), where)
        )
    return entries


class ApiKeyStore:
    """The key file in force, re-read when it changes."""

    def __init__(self, path: Path | str, check_seconds: float = 1.0) -> None:
        self._file = WatchedFile(path, parse_key_file, check_seconds)

    @property
    def generation(self) -> int:
        return self._file.generation

    def reload(self) -> bool:
        """Check the file now (rather than at the next interval): True if it changed."""
        return self._file.reload()

    def entries(self) -> dict[str, KeyEntry]:
        return self._file.get()

    def verify(self, key: str, now: float) -> Principal:
        """The principal `key` belongs to; Unauthenticated (with no detail) otherwise."""
        ident = key_id(key)
        entry = self.entries().get(ident) if ident else None
        if entry is None or not key_matches(key, entry.hash):
            raise Unauthenticated("invalid credentials")
        if entry.expires_at is not None and now >= entry.expires_at:
            raise Unauthenticated("invalid credentials")
        return Principal(entry.tenant, f"key:{entry.id}", "api-key", entry.roles, entry.expires_at)
