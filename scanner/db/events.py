"""``payment_events``: the outbox, written in the same transaction as the change it records.

On PostgreSQL event inserts are serialized (a transaction-level advisory lock) so that ids become
visible in commit order, and each commit that wrote events sends ``NOTIFY payment_events``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.plan import OutboxRow
from scanner.db.locks import events_xact_lock
from scanner.db.sql import is_postgres, now, table


async def append(session: AsyncSession, rows: Sequence[OutboxRow]) -> None:
    if not rows:
        return
    postgres = is_postgres(session)
    if postgres:
        await events_xact_lock(session)
    stamp = now()
    values = [
        {
            "payment_id": row.payment_key,
            "type": row.event.type,
            "status_from": row.event.status_from,
            "status_to": row.event.status_to,
            "data": dict(row.data),
            "created_at": stamp,
        }
        for row in rows
    ]
    await session.execute(insert(table("payment_events")), values)
    if postgres:
        await session.execute(text("NOTIFY payment_events"))
