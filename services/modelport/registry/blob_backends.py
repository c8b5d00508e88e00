"""Where finished blobs are kept: a filesystem path or an S3-compatible bucket.

`BlobStore` (in `blobs`) does the content addressing, the local staging of
uploads and (with encryption on) the sealing; a backend only keeps named,
immutable objects. Both backends make an object visible under its name only
once it is whole: the filesystem by an fsynced rename, S3 by completing a
multipart upload (each part sent with its SHA-256, which the server checks).

Names are relative paths such as `sha256/ab/<sha256>`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from modelport.errors import InvalidInput, NotFound, Unavailable


@dataclass(frozen=True)
class StoredObject:
    name: str
    size: int
    modified: float  # seconds since the epoch


class BlobBackend(Protocol):
    """Named immutable objects. `put` consumes nothing: the caller removes `local`."""

    # Whether `put` renames `local` away (so it needs no removal) — the filesystem's.
    moves_local: bool

    def put(self, name: str, local: Path) -> None:
        """Store the file `local` as `name`; visible only once complete."""
        ...

    def exists(self, name: str) -> bool: ...

    def size(self, name: str) -> int | None: ...

    def read_chunks(self, name: str, chunk_bytes: int) -> Iterator[bytes]: ...

    def delete(self, name: str) -> None: ...

    def list(self, prefix: str) -> Iterator[StoredObject]: ...

    def describe(self) -> str: ...


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBackend:
    """Objects as files under `root` (a PVC in the cluster); `put` renames into place,
    so `local` must be on the same filesystem (the store stages under `root/tmp`)."""

    moves_local = True

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root / name

    def put(self, name: str, local: Path) -> None:
        final = self._path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, final)
        fsync_dir(final.parent)
        fsync_dir(final.parent.parent)

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def size(self, name: str) -> int | None:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError:
            return None

    def read_chunks(self, name: str, chunk_bytes: int) -> Iterator[bytes]:
        try:
            f = self._path(name).open("rb")
        except FileNotFoundError:
            raise NotFound(f"blob {Path(name).name} is missing from the blob store") from None
        with f:
            while block := f.read(chunk_bytes):
                yield block

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        base = self._path(prefix)
        if not base.is_dir():
            return
        for folder in base.iterdir():
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                name = entry.relative_to(self.root).as_posix()
                yield StoredObject(name, stat.st_size, stat.st_mtime)

    def describe(self) -> str:
        return str(self.root)


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` → (bucket, "some/prefix")."""
    if not url.startswith("s3://"):
        raise InvalidInput(f"blob store '{url}': expected s3://BUCKET[/PREFIX]")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise InvalidInput(f"blob store '{url}': the bucket name is empty")
    return bucket, prefix.strip("/")


class S3Backend:
    """Objects in an S3-compatible bucket under a prefix, through obstore.

    Credentials, region and endpoint come from the usual AWS_* variables
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL) or
    the pod's role; `endpoint` overrides the endpoint (MinIO, Ceph, moto).
    Uploads larger than `part_bytes` are multipart; an upload that fails is
    aborted, and one whose process died is never visible (a bucket lifecycle
    rule `AbortIncompleteMultipartUpload` reclaims its parts).
    """

    moves_local = False

    def __init__(
        self,
        url: str,
        endpoint: str = "",
        part_bytes: int = 8 * 1024 * 1024,
        config: dict[str, Any] | None = None,
    ) -> None:
        import obstore
        from obstore.exceptions import NotFoundError
        from obstore.store import S3Store

        self._obs = obstore
        self._not_found = NotFoundError
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self.part_bytes = part_bytes
        options: dict[str, Any] = {"checksum_algorithm": "sha256", **(config or {})}
        if endpoint:
            options["endpoint"] = endpoint
        client: dict[str, Any] = {}
        if str(options.get("endpoint", os.environ.get("AWS_ENDPOINT_URL", ""))).startswith(
            "http://"
        ):
            client["allow_http"] = True
            options.setdefault("virtual_hosted_style_request", False)
        options.setdefault("region", os.environ.get("AWS_REGION", "us-east-1"))
        self.store = S3Store(
            self.bucket,
            prefix=self.prefix or None,
            config=options,  # type: ignore[arg-type]
            client_options=client or None,  # type: ignore[arg-type]
        )

    def _call(self, what: str, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self.store, *args, **kwargs)
        except FileNotFoundError:
            raise NotFound(
                f"blob {name.rsplit('/', 1)[-1]} is missing from the blob store"
            ) from None
        except Exception as exc:
            if type(exc).__name__ == "NotFoundError":
                raise NotFound(
                    f"blob {name.rsplit('/', 1)[-1]} is missing from the blob store"
                ) from None
            raise Unavailable(f"blob store {self.url}: {what} {name} failed: {exc}") from None

    def put(self, name: str, local: Path) -> None:
        self._call(
            "upload of", name, self._obs.put, name, local, chunk_size=self.part_bytes,
            max_concurrency=4,
        )  # fmt: skip
        stored = self.size(name)
        expected = local.stat().st_size
        if stored != expected:
            raise Unavailable(
                f"blob store {self.url}: {name} holds {stored} bytes after upload, not {expected}"
            )

    def exists(self, name: str) -> bool:
        return self.size(name) is not None

    def size(self, name: str) -> int | None:
        try:
            meta = self._call("head of", name, self._obs.head, name)
        except NotFound:
            return None
        return int(meta["size"])

    def read_chunks(self, name: str, chunk_bytes: int) -> Iterator[bytes]:
        result = self._call("download of", name, self._obs.get, name)
        try:
            for block in result.stream(min_chunk_size=chunk_bytes):
                yield bytes(block)
        except Exception as exc:
            raise Unavailable(f"blob store {self.url}: download of {name} failed: {exc}") from None

    def delete(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            self._call("delete of", name, self._obs.delete, name)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        stream = self._call("listing of", prefix, self._obs.list, prefix)
        for batch in stream:
            for meta in batch:
                modified = meta["last_modified"]
                if isinstance(modified, datetime):
                    if modified.tzinfo is None:
                        modified = modified.replace(tzinfo=UTC)
                    stamp = modified.timestamp()
                else:
                    stamp = float(modified)
                yield StoredObject(str(meta["path"]), int(meta["size"]), stamp)

    def describe(self) -> str:
        return self.url
