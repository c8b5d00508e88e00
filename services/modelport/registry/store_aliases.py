"""The registry core's aliases (moves, history, rollback, the derive gate's refusal) and
traffic policies: a part of `RegistryStore`, kept apart by concern.

Every mutation runs in the store's `Writer` transaction, like the rest of the store.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Row, select

from modelport.artifacts.archive_checks import Signature
from modelport.artifacts.refs import check_alias_name
from modelport.errors import FailedPrecondition, NotFound
from modelport.registry import queries as q
from modelport.registry import tables as t
from modelport.registry.records import AliasInfo, AliasMove, EventKind, Policy, VersionStatus
from modelport.registry.transactions import Tx, Writer, as_utc, utcnow


class AliasesAndPolicies:
    """Mixed into `RegistryStore`, which provides the engine and the writer."""

    engine: Engine
    writer: Writer

    # -- aliases -------------------------------------------------------------------

    def _move_alias(
        self, tx: Tx, model: Row[Any], alias: str, version: int, *, force: bool = False
    ) -> AliasInfo:
        check_alias_name(model.name, alias)
        row = q.version_row(tx.conn, model, version)
        if row.status == VersionStatus.REJECTED and not force:
            raise FailedPrecondition(
                f"model '{model.name}' version {version} was rejected by its derive job's "
                f"accuracy gate; alias '{alias}' does not move to it without force"
            )
        where = (t.aliases.c.model_id == model.id, t.aliases.c.alias == alias)
        previous = tx.conn.scalar(select(t.aliases.c.version).where(*where))
        if previous is not None and previous != version and not force:
            current = q.version_row(tx.conn, model, int(previous))
            changed = Signature.from_json(row.signature).differences(
                Signature.from_json(current.signature)
            )
            if changed:
                raise FailedPrecondition(
                    f"model '{model.name}' version {version} does not take what version "
                    f"{previous} (at alias '{alias}') takes: {changed}; callers of "
                    f"'{model.name}@{alias}' would break. Move it anyway with force "
                    "(`--force`)"
                )
        revision = tx.emit(
            EventKind.ALIAS_MOVED,
            model.name,
            version=version,
            alias=alias,
            previous_version=int(previous or 0),
        )
        now = utcnow()
        values = {"version": version, "updated_at": now, "revision": revision}
        if previous is None:
            tx.conn.execute(t.aliases.insert().values(model_id=model.id, alias=alias, **values))
        else:
            tx.conn.execute(t.aliases.update().where(*where).values(**values))
        tx.conn.execute(
            t.alias_history.insert().values(
                model_id=model.id, alias=alias, version=version, moved_at=now, revision=revision
            )
        )
        return AliasInfo(model.name, alias, version, int(previous or 0), now, revision)

    def set_alias(self, model: str, alias: str, version: int, *, force: bool = False) -> AliasInfo:
        with self.writer.write() as tx:
            return self._move_alias(tx, q.model_row(tx.conn, model), alias, version, force=force)

    def delete_alias(self, model: str, alias: str) -> None:
        with self.writer.write() as tx:
            model_row = q.model_row(tx.conn, model)
            where = (t.aliases.c.model_id == model_row.id, t.aliases.c.alias == alias)
            previous = tx.conn.scalar(select(t.aliases.c.version).where(*where))
            if previous is None:
                raise NotFound(f"model '{model}' has no alias '{alias}'")
            tx.conn.execute(t.aliases.delete().where(*where))
            revision = tx.emit(
                EventKind.ALIAS_DELETED, model, alias=alias, previous_version=int(previous)
            )
            tx.conn.execute(
                t.alias_history.insert().values(
                    model_id=model_row.id,
                    alias=alias,
                    version=0,
                    moved_at=utcnow(),
                    revision=revision,
                )
            )

    def alias_history(self, model: str, alias: str = "") -> list[AliasMove]:
        with self.engine.connect() as conn:
            model_row = q.model_row(conn, model)
            query = select(t.alias_history).where(t.alias_history.c.model_id == model_row.id)
            if alias:
                query = query.where(t.alias_history.c.alias == alias)
            rows = conn.execute(query.order_by(t.alias_history.c.revision)).all()
        return [
            AliasMove(r.alias, int(r.version), as_utc(r.moved_at), int(r.revision)) for r in rows
        ]

    def rollback_alias(self, model: str, alias: str) -> AliasInfo:
        """Point `alias` back at the version it held before its current one (if still stored)."""
        with self.writer.write() as tx:
            model_row = q.model_row(tx.conn, model)
            current = tx.conn.scalar(
                select(t.aliases.c.version).where(
                    t.aliases.c.model_id == model_row.id, t.aliases.c.alias == alias
                )
            )
            if current is None:
                raise NotFound(f"model '{model}' has no alias '{alias}' to roll back")
            history = tx.conn.scalars(
                select(t.alias_history.c.version)
                .where(t.alias_history.c.model_id == model_row.id, t.alias_history.c.alias == alias)
                .order_by(t.alias_history.c.revision.desc())
            ).all()
            existing = set(
                tx.conn.scalars(
                    select(t.versions.c.version).where(t.versions.c.model_id == model_row.id)
                )
            )
            target = next((int(v) for v in history if v and v != current and v in existing), 0)
            if not target:
                raise FailedPrecondition(
                    f"model '{model}' alias '{alias}' has no earlier version to roll back to"
                )
            # It held the alias before, so it passed (or was forced past) any gate then.
            return self._move_alias(tx, model_row, alias, target, force=True)

    # -- traffic policies ------------------------------------------------------

    def set_policy(self, model: str, policy: Policy) -> Policy:
        policy.check(model)
        with self.writer.write() as tx:
            model_row = q.model_row(tx.conn, model)
            tx.conn.execute(t.policies.delete().where(t.policies.c.model_id == model_row.id))
            revision = tx.emit(EventKind.POLICY_CHANGED, model)
            if not policy.is_empty():
                tx.conn.execute(
                    t.policies.insert().values(
                        model_id=model_row.id, policy=policy.to_json(), revision=revision
                    )
                )
        return Policy.from_json(policy.to_json(), revision)

    def get_policy(self, model: str) -> Policy:
        with self.engine.connect() as conn:
            model_row = q.model_row(conn, model)
            row = conn.execute(
                select(t.policies).where(t.policies.c.model_id == model_row.id)
            ).first()
        return Policy.from_json(row.policy, int(row.revision)) if row else Policy()
