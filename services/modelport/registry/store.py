"""The registry core: models, versions, aliases, policies and events over SQLAlchemy + blobs.

Aliases and policies live in `store_aliases` (mixed in), derive jobs in `derive_jobs`.

Transport-free and synchronous (the servicer runs it in worker threads). Every
mutation runs in a `Writer` transaction (see `transactions`): serialised, each
event with the next revision, visible in revision order.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, select

from modelport.artifacts import archive_checks
from modelport.artifacts.refs import Ref, check_alias_name, check_model_name
from modelport.artifacts.sealed_files import SealedFiles
from modelport.artifacts.sealed_files import remove as remove_sealed
from modelport.errors import AlreadyExists, FailedPrecondition, InvalidInput
from modelport.registry import queries as q
from modelport.registry import tables as t
from modelport.registry.blob_backends import BlobBackend
from modelport.registry.blobs import BlobStore, UploadSink
from modelport.registry.database import migrate, open_engine
from modelport.registry.derive_jobs import DeriveJobInfo, DeriveJobs
from modelport.registry.placements import PoolPlacements
from modelport.registry.records import (
    Event,
    EventKind,
    ModelInfo,
    NewVersion,
    Resolved,
    VersionInfo,
    VersionStatus,
)
from modelport.registry.store_aliases import AliasesAndPolicies
from modelport.registry.transactions import Tx, Writer, utcnow

log = logging.getLogger(__name__)


class RegistryStore(AliasesAndPolicies):
    def __init__(
        self,
        engine: Engine,
        blobs: BlobStore,
        *,
        max_upload_bytes: int,
        max_compression_ratio: int = archive_checks.MAX_COMPRESSION_RATIO,
    ) -> None:
        self.engine = engine
        self.blobs = blobs
        self.max_upload_bytes = max_upload_bytes
        self.max_compression_ratio = max_compression_ratio
        self.writer = Writer(engine)
        self.jobs = DeriveJobs(engine, self.writer)
        self.add_listener = self.writer.add_listener
        self.remove_listener = self.writer.remove_listener
        self.placements = PoolPlacements(engine, self.writer)

    @classmethod
    def open(
        cls,
        database: str,
        blob_dir: Path | str,
        *,
        max_upload_bytes: int,
        max_compression_ratio: int = archive_checks.MAX_COMPRESSION_RATIO,
        stale_upload_seconds: float = 3600.0,
        blob_backend: BlobBackend | None = None,
        sealing: SealedFiles | None = None,
        scratch_dir: Path | None = None,
    ) -> RegistryStore:
        """Open the database, migrate it, and sweep what a crash may have left in the blob dir.

        Blobs live in `blob_dir` unless `blob_backend` (S3) keeps them; uploads
        are staged in `blob_dir/tmp` either way. With `sealing`, blobs are
        encrypted at rest and plaintext exists only in `scratch_dir` (default:
        the blob dir's tmp/) while an upload is checked.
        """
        engine = open_engine(database)
        migrate(engine)
        blobs = BlobStore(
            blob_dir, blob_backend, stale_upload_seconds, sealing=sealing, scratch=scratch_dir
        )
        store = cls(
            engine,
            blobs,
            max_upload_bytes=max_upload_bytes,
            max_compression_ratio=max_compression_ratio,
        )
        store.sweep(stale_upload_seconds)
        return store

    def sweep(self, stale_upload_seconds: float) -> None:
        """Remove abandoned uploads and blobs that no version names (a crash's leftovers)."""
        self.blobs.sweep_uploads(stale_upload_seconds)
        with self.writer.write() as tx:
            referenced = set(tx.conn.scalars(select(t.versions.c.sha256).distinct()))
            self.blobs.sweep_unreferenced(referenced)

    def close(self) -> None:
        self.engine.dispose()
        self.blobs.owner.close()

    def current_revision(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(t.revision_counter.c.revision)) or 0)

    # -- models ----------------------------------------------------------------

    def _insert_model(self, tx: Tx, name: str, description: str, labels: dict[str, str]) -> None:
        check_model_name(name)
        if tx.conn.execute(select(t.models.c.id).where(t.models.c.name == name)).first():
            raise AlreadyExists(f"model '{name}' exists already")
        tx.conn.execute(
            t.models.insert().values(
                name=name,
                description=description,
                labels=dict(labels),
                created_at=utcnow(),
                latest_version=0,
            )
        )
        tx.emit(EventKind.MODEL_CREATED, name)

    def create_model(
        self, name: str, description: str = "", labels: dict[str, str] | None = None
    ) -> ModelInfo:
        with self.writer.write() as tx:
            self._insert_model(tx, name, description, labels or {})
        return self.get_model(name)

    def get_model(self, name: str) -> ModelInfo:
        with self.engine.connect() as conn:
            return q.model_info(conn, q.model_row(conn, name))

    def list_models(self) -> tuple[list[ModelInfo], int]:
        revision = self.current_revision()
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.models).order_by(t.models.c.name)).all()
            return [q.model_info(conn, row) for row in rows], revision

    def delete_model(self, name: str, *, force: bool = False) -> None:
        with self.writer.write() as tx:
            model = q.model_row(tx.conn, name)
            aliased = tx.conn.scalars(
                select(t.aliases.c.alias).where(t.aliases.c.model_id == model.id)
            ).all()
            if aliased and not force:
                raise FailedPrecondition(
                    f"model '{name}' still has aliases ({', '.join(sorted(aliased))}); "
                    "delete them first or force"
                )
            shas = set(
                tx.conn.scalars(
                    select(t.versions.c.sha256).where(t.versions.c.model_id == model.id)
                )
            )
            for table in (t.aliases, t.alias_history, t.policies, t.pool_placements, t.versions):
                tx.conn.execute(table.delete().where(table.c.model_id == model.id))
            tx.conn.execute(t.models.delete().where(t.models.c.id == model.id))
            tx.emit(EventKind.MODEL_DELETED, name)
        self._drop_unreferenced(shas)

    # -- versions ----------------------------------------------------------------

    def check_upload(self, new: NewVersion) -> None:
        """Check an upload's header before any bytes arrive."""
        check_model_name(new.model)
        for alias in new.aliases:
            check_alias_name(new.model, alias)
        if not new.create_model:
            self.get_model(new.model)
        if new.derive_job:  # a worker's token is checked before its bytes arrive
            self.jobs.check_upload(new.derive_job, new.derive_token, new.model)

    def open_upload(self) -> UploadSink:
        """Where an upload's bytes go: a temp file, size-limited and hashed."""
        return self.blobs.sink(self.max_upload_bytes)

    def begin_upload(self, new: NewVersion) -> UploadSink:
        self.check_upload(new)
        return self.open_upload()

    def finish_upload(self, sink: UploadSink, new: NewVersion, expected_sha256: str) -> VersionInfo:
        """Verify, check and store an upload whose bytes are all in `sink`.

        The blob is durable before the row is written; on any error the temp
        files go and nothing is stored.
        """
        work = self.blobs.temp_dir()
        stored = self.blobs.temp_path(".tar")
        prepared: archive_checks.PreparedArchive | None = None
        durable = stored
        try:
            received = sink.finish()
            if expected_sha256 and received != expected_sha256.lower():
                raise InvalidInput(
                    f"model '{new.model}': upload sha256 mismatch: header says "
                    f"{expected_sha256}, received bytes hash to {received}"
                )
            job: DeriveJobInfo | None = None
            if new.derive_job:
                job = self.jobs.check_upload(new.derive_job, new.derive_token, new.model)
            parent = self.resolve(job.parent if job else new.parent) if job or new.parent else None
            prepared = archive_checks.prepare(
                sink.path,
                new.model,
                work,
                stored,
                self.max_upload_bytes,
                allow_native=job is not None,  # compiled by our own worker
                max_ratio=self.max_compression_ratio,
            )
            durable = self.blobs.make_durable(prepared.path)
            self.blobs.stage(durable, prepared.sha256)
            with self.writer.write() as tx:
                self.blobs.place(durable, prepared.sha256)
                version = self._insert_version(tx, new, prepared, parent, job)
        except BaseException:
            stored.unlink(missing_ok=True)
            remove_sealed(durable)
            if prepared is not None:  # placed, but its row never committed
                self._drop_unreferenced({prepared.sha256})
            raise
        finally:
            sink.discard()
            shutil.rmtree(work, ignore_errors=True)
        return self.get_version(f"{new.model}:{version}")

    def _insert_version(
        self,
        tx: Tx,
        new: NewVersion,
        prepared: archive_checks.PreparedArchive,
        parent: Resolved | None,
        job: DeriveJobInfo | None,
    ) -> int:
        if (
            new.create_model
            and not tx.conn.execute(
                select(t.models.c.id).where(t.models.c.name == new.model)
            ).first()
        ):
            self._insert_model(tx, new.model, new.description, {})
        model = q.model_row(tx.conn, new.model)
        version = int(model.latest_version) + 1
        lineage = new.lineage.to_json() | ({"job": job.id} if job else {})
        status, aliases = VersionStatus.NONE, new.aliases
        if job is not None:  # the gate decides the status and whether aliases move
            status, aliases = self.jobs.finish(tx, job, new.derive_token, version, new.metrics)
        tx.conn.execute(
            t.versions.insert().values(
                model_id=model.id,
                version=version,
                sha256=prepared.sha256,
                size_bytes=prepared.size_bytes,
                created_at=utcnow(),
                labels={**(job.request.get("labels", {}) if job else {}), **new.labels},
                metrics={k: float(v) for k, v in new.metrics.items()},
                parent=f"{parent.model}:{parent.version}" if parent else "",
                signature=prepared.signature.to_json(),
                model_file=prepared.model_file,
                lineage=lineage,
                status=status,
            )
        )
        tx.conn.execute(
            t.models.update().where(t.models.c.id == model.id).values(latest_version=version)
        )
        tx.emit(EventKind.VERSION_ADDED, new.model, version=version)
        for alias in aliases:
            # A derive job's gate has decided; a plain push moves an alias to a new
            # signature only when forced, as `models alias` does.
            self._move_alias(tx, model, alias, version, force=job is not None or new.force)
        return version

    def resolve(self, ref: str | Ref) -> Resolved:
        parsed = Ref.parse(ref) if isinstance(ref, str) else ref
        revision = self.current_revision()
        with self.engine.connect() as conn:
            row, alias = q.resolve_row(conn, parsed)
        return Resolved(
            parsed.model, int(row.version), row.sha256, alias, revision, int(row.size_bytes)
        )

    def get_version(self, ref: str | Ref) -> VersionInfo:
        parsed = Ref.parse(ref) if isinstance(ref, str) else ref
        with self.engine.connect() as conn:
            row, _alias = q.resolve_row(conn, parsed)
            return q.version_info(conn, parsed.model, row)

    def list_versions(self, model: str) -> list[VersionInfo]:
        with self.engine.connect() as conn:
            model_row = q.model_row(conn, model)
            rows = conn.execute(
                select(t.versions)
                .where(t.versions.c.model_id == model_row.id)
                .order_by(t.versions.c.version)
            ).all()
            return [q.version_info(conn, model, row) for row in rows]

    def delete_version(self, model: str, version: int) -> None:
        with self.writer.write() as tx:
            model_row = q.model_row(tx.conn, model)
            row = q.version_row(tx.conn, model_row, version)
            aliased = tx.conn.scalars(
                select(t.aliases.c.alias).where(
                    t.aliases.c.model_id == model_row.id, t.aliases.c.version == version
                )
            ).all()
            if aliased:
                raise FailedPrecondition(
                    f"model '{model}' version {version} is aliased as "
                    f"{', '.join(sorted(aliased))}: move or delete the alias first"
                )
            tx.conn.execute(t.versions.delete().where(t.versions.c.id == row.id))
            tx.emit(EventKind.VERSION_DELETED, model, version=version)
        self._drop_unreferenced({row.sha256})

    def _drop_unreferenced(self, shas: set[str]) -> None:
        """Delete the blobs among `shas` that no version names any more.

        Under the write lock: an upload reusing one of them places and
        records it under the same lock, so it is either seen here or finds
        the blob gone and places its own copy.
        """
        if not shas:
            return
        with self.writer.write() as tx:
            still = set(
                tx.conn.scalars(select(t.versions.c.sha256).where(t.versions.c.sha256.in_(shas)))
            )
            for sha in shas - still:
                self.blobs.delete(sha)

    def open_download(self, ref: str, chunk_bytes: int) -> tuple[VersionInfo, Iterator[bytes]]:
        info = self.get_version(ref)
        return info, self.blobs.read_chunks(info.sha256, chunk_bytes)

    # -- events --------------------------------------------------------------------

    def events_after(
        self, revision: int, models: frozenset[str] = frozenset(), limit: int = 500
    ) -> list[Event]:
        with self.engine.connect() as conn:
            return q.events_after(conn, revision, models, limit)
