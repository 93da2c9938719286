"""``payment_sums``: the running totals of each payment's counted credits (the scanner's own
table), read instead of a payment's final credits and written with every payment update.

A stored total that does not agree with the credits loaded beside it is never trusted: the
payment is read in full instead (:func:`settled_of`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.model import Credit
from scanner.core.plan import PaymentUpdate
from scanner.core.states import NOTHING, Settled
from scanner.db import bulk
from scanner.db.payments import in_keys, raw, stored_key
from scanner.db.sql import now, table

log = structlog.get_logger(__name__)


async def totals_of(session: AsyncSession, keys: Collection[Any]) -> dict[Any, Settled]:
    """The stored totals of the payments of ``keys`` (ids as stored) that have a readable row
    (one statement; a row that cannot be read is left out: its payment is read in full)."""
    if not keys:
        return {}
    s = table("payment_sums")
    columns = (s.c.payment_id, s.c.counted_value, s.c.counted_credits, s.c.first_block)
    stmt = select(*(raw(c) for c in (*columns, s.c.last_block)))
    out: dict[Any, Settled] = {}
    for row in await session.execute(stmt.where(in_keys(session, s.c.payment_id, keys))):
        try:
            first, last = (None if b is None else int(b) for b in row[3:5])
            out[stored_key(row[0])] = Settled(int(str(row[1])), int(row[2]), first, last)
        except (ValueError, TypeError):
            log.warning("payment_sums_invalid", payment_id=str(row[0]))
    return out


def settled_of(total: Settled, loaded: Iterable[Credit]) -> Settled | None:
    """What the credits not loaded add up to: ``total`` (every counted credit) less the counted
    ones among ``loaded``; None when they do not add up (read the payment in full). The first
    and last blocks stay the total's: the loaded credits keep counting too, so the minimum and
    maximum over both are the same."""
    counted = [c for c in loaded if c.counted]
    value = total.value - sum(c.value for c in counted)
    credits = total.credits - len(counted)
    if credits == 0 and value == 0:
        return NOTHING
    try:
        return Settled(value, credits, total.first, total.last)
    except ValueError:
        return None


_COLUMNS = (
    "payment_id",
    "counted_value",
    "counted_credits",
    "first_block",
    "last_block",
    "updated_at",
)


async def write(session: AsyncSession, updates: Sequence[PaymentUpdate]) -> None:
    """Each updated payment's totals, one bulk upsert."""
    stamp = now()
    rows: list[tuple[object, ...]] = [
        (u.key, u.totals.value, u.totals.credits, u.totals.first, u.totals.last, stamp)
        for u in updates
    ]
    s = table("payment_sums")
    await bulk.upsert(session, s, _COLUMNS, rows, key=("payment_id",), rewrite=_COLUMNS[1:])
