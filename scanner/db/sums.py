"""``payment_sums``: the running totals of each payment's counted credits (the scanner's own
table), read instead of a payment's final credits and written with every payment update.

A stored total that does not agree with the credits loaded beside it is never trusted: the
payment is read in full instead (:func:`settled_of`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any
from uuid import UUID

import msgspec
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.model import Credit
from scanner.core.plan import PaymentUpdate
from scanner.core.states import NOTHING, Settled
from scanner.db import bulk
from scanner.db.payments import in_keys, raw, stored_key
from scanner.db.sql import now, table
from scanner.db.types import to_decimal

log = structlog.get_logger(__name__)


class Stored(msgspec.Struct, frozen=True, gc=False):
    """A payment's stored totals, and the token (its id as stored) they are in base units of."""

    total: Settled
    token: Any

    def of(self, token_id: UUID | None) -> bool:
        """Whether the totals are of ``token_id`` (the payment's token now)."""
        if self.token is None or token_id is None:
            return self.token is None and token_id is None
        try:
            return UUID(str(self.token)) == token_id
        except ValueError:
            return False


async def totals_of(session: AsyncSession, keys: Collection[Any]) -> dict[Any, Stored]:
    """The stored totals of the payments of ``keys`` (ids as stored) that have a readable row
    (one statement; a row that cannot be read is left out: its payment is read in full)."""
    if not keys:
        return {}
    s = table("payment_sums")
    columns = (s.c.payment_id, s.c.counted_value, s.c.counted_credits, s.c.first_block)
    stmt = select(*(raw(c) for c in (*columns, s.c.last_block, s.c.token_id)))
    out: dict[Any, Stored] = {}
    for row in await session.execute(stmt.where(in_keys(session, s.c.payment_id, keys))):
        try:
            first, last = (None if b is None else int(b) for b in row[3:5])
            value = to_decimal(row[1])  # asyncpg gives numeric 7000000 as Decimal('7.00E+6')
            if value != value.to_integral_value():
                raise ValueError(f"counted_value {row[1]!r:.40} is no whole number")
            out[stored_key(row[0])] = Stored(Settled(int(value), int(row[2]), first, last), row[5])
        except (ValueError, TypeError, ArithmeticError):
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
    if credits == 0:
        return NOTHING if value == 0 else None
    try:
        return Settled(value, credits, total.first, total.last)
    except ValueError:
        return None


_COLUMNS = (
    "payment_id",
    "token_id",
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
        (u.key, u.token_key, u.totals.value, u.totals.credits, u.totals.first, u.totals.last, stamp)
        for u in updates
    ]
    s = table("payment_sums")
    await bulk.upsert(session, s, _COLUMNS, rows, key=("payment_id",), rewrite=_COLUMNS[1:])
