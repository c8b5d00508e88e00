"""`modelport keys …`: API keys for callers, key-encryption keys, and re-wrapping
blob keys after a KEK rotation. Files are written in place (mount them as Secrets)."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml


def _write(path: Path, document: dict[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(yaml.safe_dump(document, sort_keys=False))
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    document = yaml.safe_load(path.read_text()) or {}
    if not isinstance(document, dict):
        raise click.ClickException(f"{path}: not a YAML mapping")
    return document


@click.group("keys")
def keys() -> None:
    """API keys, key-encryption keys (KEKs), and KEK rotation."""


@keys.command("api-key")
@click.option("--tenant", required=True, help="The tenant the key authenticates as.")
@click.option("--role", "roles", multiple=True, help="Extra role of this key (repeatable).")
@click.option("--expires", default="", help="ISO 8601 time after which the key is refused.")
@click.option(
    "--file",
    "path",
    type=click.Path(path_type=Path),
    default=None,
    help="Append the entry to this key file (else print it).",
)
def api_key(tenant: str, roles: tuple[str, ...], expires: str, path: Path | None) -> None:
    """Make an API key: the key is printed once (give it to its owner); only its
    salted hash goes in the key file."""
    from modelport.auth.api_keys import new_key, parse_key_file

    expires_at = None
    if expires:
        try:
            moment = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter("not an ISO 8601 time", param_hint="--expires") from None
        expires_at = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    key, entry = new_key(tenant, frozenset(roles), expires_at)
    if path is None:
        click.echo(yaml.safe_dump({"keys": [entry.to_yaml_item()]}, sort_keys=False), err=True)
    else:
        document = _load(path)
        document.setdefault("keys", []).append(entry.to_yaml_item())
        parse_key_file(yaml.safe_dump(document).encode())  # the file stays valid
        _write(path, document)
        click.echo(f"added key {entry.id} for tenant '{tenant}' to {path}", err=True)
    click.echo(key)


@keys.command("kek")
@click.option(
    "--file",
    "path",
    type=click.Path(path_type=Path),
    required=True,
    help="The keyring file (created if missing).",
)
@click.option("--id", "kek_id", default="", help="Id of the new key (default: today's date).")
@click.option("--activate/--no-activate", default=True, help="New blobs use it from now on.")
def kek(path: Path, kek_id: str, activate: bool) -> None:
    """Add a fresh key-encryption key to a keyring file (rotation: add, activate,
    then `modelport keys rewrap`, then remove the old key)."""
    from modelport.artifacts.keyring import Keyring, new_key

    document = _load(path)
    keys_section = document.setdefault("keys", {})
    kek_id = kek_id or datetime.now(UTC).strftime("%Y-%m-%d")
    if kek_id in keys_section:
        raise click.ClickException(f"{path} already has a key '{kek_id}'")
    keys_section[kek_id] = base64.b64encode(new_key()).decode()
    if activate or "active" not in document:
        document["active"] = kek_id
    Keyring.parse(yaml.safe_dump(document).encode())  # the file stays valid
    _write(path, document)
    click.echo(f"{path}: key '{kek_id}' added; active: '{document['active']}'")


@keys.command("rewrap")
@click.option(
    "--blob-dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
    envvar="MODELPORT_BLOB_DIR",
    help="The registry's blob directory.",
)
@click.option(
    "--kek-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    envvar="MODELPORT_KEK_FILE",
    help="The keyring in force.",
)
@click.option(
    "--blob-store",
    default="",
    envvar="MODELPORT_BLOB_STORE",
    help="s3://BUCKET[/PREFIX] when the registry keeps its blobs in a bucket.",
)
@click.option(
    "--s3-endpoint", default="", envvar="MODELPORT_S3_ENDPOINT", help="With --blob-store."
)
@click.option(
    "--seal-plaintext",
    is_flag=True,
    help="Also encrypt blobs stored before encryption was turned on.",
)
def rewrap(
    blob_dir: Path, kek_file: Path, blob_store: str, s3_endpoint: str, seal_plaintext: bool
) -> None:
    """Wrap every blob's data key under the active KEK (only the small .key files
    change; blobs are not read or written), so the old KEK can be retired."""
    from modelport.common.encryption import sealing_of
    from modelport.registry.blob_backends import S3Backend
    from modelport.registry.blobs import BlobStore

    backend = S3Backend(blob_store, endpoint=s3_endpoint) if blob_store else None
    store = BlobStore(blob_dir, backend, sealing=sealing_of(kek_file))
    sealed = store.seal_plaintext() if seal_plaintext else 0
    changed = store.rewrap()
    click.echo(
        f"{changed} data keys re-wrapped" + (f", {sealed} blobs encrypted" if sealed else "")
    )
