"""The credits a chain with ``verify_urls`` waits to have verified, and the verdicts on them.

Each credit keeps a schedule of its own (``verify_tries``, ``verify_after``): one that a provider
disagreed with is asked again after a backoff, one no provider answered for goes behind the
others, so that credits that disagree for good never hold back the ones after them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.db.sql import compare, now, table

PAGE = 100


@dataclass(frozen=True, slots=True)
class Awaiting:
    """A credit whose block is final, not yet verified in that block."""

    payment_key: object
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    to_address: str
    token: str | None  # the token contract; None for the native coin
    value: int
    failed_before: bool  # a disagreement on this block was reported already
    tries: int = 0  # disagreements so far (the backoff doubles with each)


async def awaiting(
    session: AsyncSession, chain: str, final_block: int, at: datetime
) -> list[Awaiting]:
    """The chain's not-yet-final credits (late ones too) in final blocks that no provider
    verified yet and that are due at ``at``, a page at a time: those never asked first, then
    the longest waiting, in block order (what keeps their payments ``confirming``)."""
    t, k = table("transactions"), table("tokens")
    rows = await session.execute(
        select(
            t.c.payment_id,
            t.c.tx_hash,
            t.c.log_index,
            t.c.block_number,
            t.c.block_hash,
            t.c.to_address,
            k.c.address,
            t.c.value,
            t.c.verify_failed_hash,
            t.c.verify_tries,
        )
        .select_from(t.outerjoin(k, k.c.id == t.c.token_id))
        .where(
            t.c.chain == chain,
            t.c.status == "pending",
            t.c.block_number <= final_block,
            or_(t.c.verified_hash.is_(None), t.c.verified_hash != t.c.block_hash),
            _due(at),
        )
        .order_by(t.c.verify_after.is_not(None), t.c.verify_after, t.c.block_number, t.c.log_index)
        .limit(PAGE)
    )
    return [_awaiting(row) for row in rows]


def _awaiting(row: Any) -> Awaiting:
    pid, tx, li, bn, bh, to, token, value, failed, tries = row
    return Awaiting(
        pid,
        str(tx),
        int(li),
        int(bn),
        str(bh),
        str(to).lower(),
        None if token is None else str(token).lower(),
        int(value),
        failed == bh,
        int(tries or 0),
    )


def _due(at: datetime) -> ColumnElement[bool]:
    """Never asked, its wait over, or re-mined since it disagreed (a new block is asked at once)."""
    t = table("transactions")
    return or_(
        t.c.verify_after.is_(None),
        compare(t.c.verify_after, "<=", at),
        t.c.verify_failed_hash.is_(None),
        t.c.verify_failed_hash != t.c.block_hash,
    )


def _row(chain: str, row: Awaiting) -> ColumnElement[bool]:
    t = table("transactions")
    return and_(
        t.c.chain == chain,
        t.c.tx_hash == row.tx_hash,
        t.c.log_index == row.log_index,
        t.c.block_hash == row.block_hash,  # a credit re-mined meanwhile is checked again
    )


async def mark_verified(session: AsyncSession, chain: str, row: Awaiting) -> None:
    t = table("transactions")
    await session.execute(
        update(t).where(_row(chain, row)).values(verified_hash=row.block_hash, updated_at=now())
    )


async def mark_failed(session: AsyncSession, chain: str, row: Awaiting, after: datetime) -> None:
    """A disagreement on ``row``'s block: not asked again before ``after``."""
    t = table("transactions")
    await session.execute(
        update(t)
        .where(_row(chain, row))
        .values(verify_failed_hash=row.block_hash, verify_tries=row.tries + 1, verify_after=after)
    )


async def put_off(session: AsyncSession, chain: str, row: Awaiting, at: datetime) -> None:
    """No provider answered for ``row``: due again at once, but behind the credits waiting
    longer (one that no provider ever answers for does not hold back the others)."""
    t = table("transactions")
    await session.execute(update(t).where(_row(chain, row)).values(verify_after=at))
