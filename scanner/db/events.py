"""``payment_events``: the outbox, written in the same transaction as the change it records.

On PostgreSQL event inserts are serialized (a transaction-level advisory lock) so that ids become
visible in commit order, and each commit that wrote events sends ``NOTIFY payment_events``.

Every event gets its key (:func:`scanner.core.events.event_key`) from its payment, its place
among that payment's events and its content. The places are counted under the same lock, so
two writers never give one place twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import datetime

import orjson
from sqlalchemy import String, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.events import event_key
from scanner.core.plan import OutboxRow
from scanner.db import bulk
from scanner.db.locks import events_xact_lock
from scanner.db.sql import is_postgres, now, table

_COLUMNS = ("payment_id", "type", "status_from", "status_to", "data", "created_at", "event_key")
_COUNT_PG = (
    "SELECT payment_id::text, count(*) FROM payment_events"
    " WHERE payment_id = ANY(CAST(:keys AS uuid[])) GROUP BY payment_id"
)
_COUNT_SQLITE = (
    "SELECT payment_id, count(*) FROM payment_events"
    " WHERE payment_id IN (SELECT value FROM json_each(:keys)) GROUP BY payment_id"
)


async def append(
    session: AsyncSession, rows: Sequence[OutboxRow], *, serialized: bool = True
) -> None:
    """Insert the rows; ``serialized=False``: into a dry run's temporary copy (no lock, no
    notification: nothing is ever committed)."""
    if not rows:
        return
    postgres = is_postgres(session)
    if postgres and serialized:
        await events_xact_lock(session)
    places = await _counts(session, {str(row.payment_key) for row in rows}, postgres)
    made = bulk.Made(len(rows), _values(rows, places, now()))
    await bulk.insert(session, table("payment_events"), _COLUMNS, made)
    if postgres and serialized:
        await session.execute(text("NOTIFY payment_events"))


async def append_made(
    session: AsyncSession, payments: Collection[object], rows: Iterable[OutboxRow]
) -> int:
    """:func:`append`, each row stored as ``rows`` makes it (a part at a time,
    :func:`~scanner.db.bulk.stream`), so that the database stores the events made so far while
    the caller makes the next ones. Every row is of one of ``payments`` (ids as stored), whose
    places are counted first (no statement can run beside a ``COPY``, nor beside a part being
    stored): a row of another one raises, and nothing is written. How many rows were
    written."""
    postgres = is_postgres(session)
    if postgres:
        await events_xact_lock(session)
    counted = {str(key) for key in payments}
    places = await _counts(session, counted, postgres)
    written = 0

    def checked() -> Iterator[OutboxRow]:
        nonlocal written
        for row in rows:
            if str(row.payment_key) not in counted:
                raise ValueError(
                    f"an event of payment {row.payment_key}, whose place was not counted"
                )
            written += 1
            yield row

    await bulk.stream(session, table("payment_events"), _COLUMNS, _values(checked(), places, now()))
    if written and postgres:
        await session.execute(text("NOTIFY payment_events"))
    return written


def _values(
    rows: Iterable[OutboxRow], places: Counter[str], stamp: datetime
) -> Iterator[tuple[object, ...]]:
    """Each row's values, its key counted from its payment's place (``places`` moves on)."""
    for row in rows:
        payment = str(row.payment_key)
        data = dict(row.data)
        event = row.event
        key = event_key(
            payment, places[payment], event.type, event.status_from, event.status_to, data
        )
        places[payment] += 1
        yield (row.payment_key, event.type, event.status_from, event.status_to, data, stamp, key)


async def _counts(session: AsyncSession, payments: set[str], postgres: bool) -> Counter[str]:
    """How many events each payment has already: the place of its next one."""
    keys = sorted(payments)
    if postgres:
        stmt = text(_COUNT_PG).bindparams(bindparam("keys", keys))
    else:
        stmt = text(_COUNT_SQLITE).bindparams(
            bindparam("keys", orjson.dumps(keys).decode(), type_=String)
        )
    return Counter({str(k): int(n) for k, n in (await session.execute(stmt)).all()})
