"""``payment_events``: the outbox, written in the same transaction as the change it records.

On PostgreSQL event inserts are serialized (a transaction-level advisory lock) so that ids become
visible in commit order, and each commit that wrote events sends ``NOTIFY payment_events``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.plan import OutboxRow
from scanner.db import bulk
from scanner.db.locks import events_xact_lock
from scanner.db.sql import is_postgres, now, table

_COLUMNS = ("payment_id", "type", "status_from", "status_to", "data", "created_at")


async def append(
    session: AsyncSession, rows: Sequence[OutboxRow], *, serialized: bool = True
) -> None:
    """Insert the rows; ``serialized=False``: into a dry run's temporary copy (no lock, no
    notification: nothing is ever committed)."""
    if not rows:
        return
    postgres = is_postgres(session) and serialized
    if postgres:
        await events_xact_lock(session)
    stamp = now()
    values: list[tuple[object, ...]] = [
        (
            row.payment_key,
            row.event.type,
            row.event.status_from,
            row.event.status_to,
            dict(row.data),
            stamp,
        )
        for row in rows
    ]
    await bulk.insert(session, table("payment_events"), _COLUMNS, values)
    if postgres:
        await session.execute(text("NOTIFY payment_events"))
