"""The registry's datasets: checked, content-addressed files with a recorded split.

Transport-free and synchronous, like the model store. An upload's bytes land
in a temp file (hashed and size-limited as they come), are checked by
`artifacts.datasets.summarize` (schema, example sizes, counts, split), made
durable, then renamed into `<blob-dir>/datasets/sha256/…` and recorded in one
transaction. On any error the temp file goes and nothing is recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from modelport.artifacts import datasets as ds
from modelport.artifacts.refs import check_model_name
from modelport.errors import InvalidInput, NotFound
from modelport.registry import tables as t
from modelport.registry.blob_backends import BlobBackend
from modelport.registry.blobs import BlobStore, UploadSink
from modelport.registry.transactions import as_utc, utcnow

_REF = re.compile(r"^(?P<name>[^:]+)(?::(?P<sha>[0-9a-fA-F]{8,64}))?$")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    sha256: str
    size_bytes: int
    format: ds.DatasetFormat
    file_name: str
    examples: int
    validation_examples: int
    validation_fraction: float
    stats: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.sha256[:12]}"


@dataclass(frozen=True)
class NewDataset:
    name: str
    file_name: str = ""
    validation_fraction: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)


def _info(row: Any) -> DatasetInfo:
    return DatasetInfo(
        name=row.name,
        sha256=row.sha256,
        size_bytes=int(row.size_bytes),
        format=ds.DatasetFormat(row.format),
        file_name=row.file_name,
        examples=int(row.examples),
        validation_examples=int(row.validation_examples),
        validation_fraction=float(row.validation_fraction),
        stats=dict(row.stats),
        labels=dict(row.labels),
        created_at=as_utc(row.created_at),
    )


class DatasetStore:
    def __init__(
        self,
        engine: Engine,
        blob_dir: Path | str,
        *,
        max_upload_bytes: int,
        backend: BlobBackend | None = None,
    ) -> None:
        self.engine = engine
        # Staged on local disk under blob_dir/datasets; kept there or in the registry's bucket.
        self.blobs = BlobStore(Path(blob_dir) / "datasets", backend)
        self.max_upload_bytes = max_upload_bytes

    def check_upload(self, new: NewDataset) -> None:
        check_model_name(new.name)
        if new.validation_fraction and not 0.0 < new.validation_fraction < 1.0:
            raise InvalidInput(
                f"dataset '{new.name}': validation_fraction {new.validation_fraction} "
                "must be between 0 and 1"
            )

    def open_upload(self) -> UploadSink:
        return self.blobs.sink(self.max_upload_bytes)

    def finish_upload(self, sink: UploadSink, new: NewDataset, expected_sha256: str) -> DatasetInfo:
        try:
            received = sink.finish()
            if expected_sha256 and received != expected_sha256.lower():
                raise InvalidInput(
                    f"dataset '{new.name}': upload sha256 mismatch: header says "
                    f"{expected_sha256}, received bytes hash to {received}"
                )
            with self.engine.connect() as conn:
                existing = conn.execute(
                    select(t.datasets).where(
                        t.datasets.c.name == new.name, t.datasets.c.sha256 == received
                    )
                ).first()
            if existing is not None:
                return _info(existing)
            try:
                summary = ds.summarize(sink.path, new.validation_fraction)
            except InvalidInput as error:
                raise InvalidInput(f"dataset '{new.name}': {error}") from None
            size = sink.size
            self.blobs.make_durable(sink.path)
            self.blobs.place(sink.path, received)
            with self.engine.begin() as conn:
                conn.execute(
                    t.datasets.insert().values(
                        name=new.name,
                        sha256=received,
                        size_bytes=size,
                        format=summary.format.value,
                        file_name=new.file_name or f"{new.name}.{_suffix(summary.format)}",
                        examples=summary.examples,
                        validation_examples=len(summary.validation),
                        validation_fraction=new.validation_fraction
                        or ds.DEFAULT_VALIDATION_FRACTION,
                        stats=summary.stats,
                        labels=dict(new.labels),
                        created_at=utcnow(),
                    )
                )
        finally:
            sink.discard()
        return self.get(f"{new.name}:{received}")

    def get(self, ref: str) -> DatasetInfo:
        match = _REF.match(ref or "")
        if not match:
            raise InvalidInput(
                f"dataset reference '{ref}': use NAME or NAME:SHA256-PREFIX (8+ hex digits)"
            )
        name, sha = match["name"], (match["sha"] or "").lower()
        query = select(t.datasets).where(t.datasets.c.name == name)
        if sha:
            query = query.where(t.datasets.c.sha256.startswith(sha))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.datasets.c.id.desc())).all()
        if not rows:
            raise NotFound(f"dataset '{ref}' not found")
        if sha and len({r.sha256 for r in rows}) > 1:
            raise InvalidInput(f"dataset reference '{ref}' is ambiguous: give more of the sha256")
        return _info(rows[0])

    def list(self, name: str = "") -> list[DatasetInfo]:
        query = select(t.datasets).order_by(t.datasets.c.id.desc())
        if name:
            query = query.where(t.datasets.c.name == name)
        with self.engine.connect() as conn:
            return [_info(row) for row in conn.execute(query)]

    def open_download(self, ref: str, chunk_bytes: int) -> tuple[DatasetInfo, Iterator[bytes]]:
        info = self.get(ref)
        return info, self.blobs.read_chunks(info.sha256, chunk_bytes)

    def sweep(self, stale_upload_seconds: float) -> None:
        self.blobs.sweep_uploads(stale_upload_seconds)


def _suffix(fmt: ds.DatasetFormat) -> str:
    return "npz" if fmt is ds.DatasetFormat.TENSORS else "jsonl"
