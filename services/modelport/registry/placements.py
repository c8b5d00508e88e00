"""Pool placements in the registry: which models the shared pool serves, with what
eviction priority and memory estimate (see `records.PoolPlacement`).

A model with no row is not pooled. Every change records a POOL_CHANGED event, so
routers and pool replicas following the Watch stream learn it at once.
"""

from __future__ import annotations

from sqlalchemy import Engine, select

from modelport.artifacts.refs import check_model_name
from modelport.registry import queries as q
from modelport.registry import tables as t
from modelport.registry.records import EventKind, PoolPlacement
from modelport.registry.transactions import Writer


class PoolPlacements:
    def __init__(self, engine: Engine, writer: Writer) -> None:
        self.engine = engine
        self.writer = writer

    def set(self, model: str, placement: PoolPlacement) -> PoolPlacement:
        check_model_name(model)
        placement.check(model)
        with self.writer.write() as tx:
            model_row = q.model_row(tx.conn, model)
            table = t.pool_placements
            tx.conn.execute(table.delete().where(table.c.model_id == model_row.id))
            revision = tx.emit(EventKind.POOL_CHANGED, model)
            if placement.pooled:
                tx.conn.execute(
                    table.insert().values(
                        model_id=model_row.id,
                        priority=placement.priority,
                        memory_bytes=placement.memory_bytes,
                        revision=revision,
                    )
                )
        return PoolPlacement(placement.pooled, placement.priority, placement.memory_bytes, revision)

    def get(self, model: str) -> PoolPlacement:
        with self.engine.connect() as conn:
            model_row = q.model_row(conn, model)
            row = conn.execute(
                select(t.pool_placements).where(t.pool_placements.c.model_id == model_row.id)
            ).first()
        if row is None:
            return PoolPlacement()
        return PoolPlacement(True, int(row.priority), int(row.memory_bytes), int(row.revision))

    def list(self) -> dict[str, PoolPlacement]:
        """Every pooled model by name."""
        table = t.pool_placements
        query = select(t.models.c.name, table).join(t.models, t.models.c.id == table.c.model_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.models.c.name)).all()
        return {
            row.name: PoolPlacement(True, int(row.priority), int(row.memory_bytes),
                                    int(row.revision))
            for row in rows
        }  # fmt: skip
