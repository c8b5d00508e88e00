"""Upload bytes per tenant per UTC day in the registry's database: the
`UploadLedger` that `auth.quotas.UploadMeter` reserves against, shared by every
registry replica (one conditional UPDATE per reservation, so two uploads racing
cannot both squeeze under the limit)."""

from __future__ import annotations

from sqlalchemy import Engine, and_, select
from sqlalchemy.exc import IntegrityError

from modelport.registry import tables as t


class DatabaseUploadLedger:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def used(self, tenant: str, day: str) -> int:
        usage = t.upload_usage
        with self.engine.connect() as conn:
            value = conn.scalar(
                select(usage.c.bytes).where(usage.c.tenant == tenant, usage.c.day == day)
            )
        return int(value or 0)

    def try_reserve(self, tenant: str, day: str, count: int, limit: int) -> bool:
        # Twice at most: a first reservation of the day may race another one's insert.
        for _ in range(2):
            try:
                return self._reserve(tenant, day, count, limit)
            except IntegrityError:
                continue
        return self._reserve(tenant, day, count, limit)

    def _reserve(self, tenant: str, day: str, count: int, limit: int) -> bool:
        usage = t.upload_usage
        row = and_(usage.c.tenant == tenant, usage.c.day == day)
        with self.engine.begin() as conn:
            updated = conn.execute(
                usage.update()
                .where(row, usage.c.bytes + count <= limit)
                .values(bytes=usage.c.bytes + count)
            )
            if updated.rowcount == 1:
                return True
            if conn.execute(select(usage.c.bytes).where(row)).first() is not None:
                return False  # the day's row exists: this reservation would overrun it
            if count > limit:
                return False
            conn.execute(usage.insert().values(tenant=tenant, day=day, bytes=count))
            return True
