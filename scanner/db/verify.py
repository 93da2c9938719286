"""The credits a chain with ``verify_urls`` waits to have verified, and the verdicts on them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.db.sql import now, table

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


async def awaiting(session: AsyncSession, chain: str, final_block: int) -> list[Awaiting]:
    """The chain's not-yet-final credits in final blocks that no provider verified yet, oldest
    first, a page at a time (what keeps their payments ``confirming``)."""
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
        )
        .select_from(t.outerjoin(k, k.c.id == t.c.token_id))
        .where(
            t.c.chain == chain,
            t.c.status == "pending",
            t.c.late.is_(False),
            t.c.block_number <= final_block,
            or_(t.c.verified_hash.is_(None), t.c.verified_hash != t.c.block_hash),
        )
        .order_by(t.c.block_number, t.c.log_index)
        .limit(PAGE)
    )
    return [
        Awaiting(
            pid,
            str(tx),
            int(li),
            int(bn),
            str(bh),
            str(to).lower(),
            None if token is None else str(token).lower(),
            int(value),
            failed == bh,
        )
        for pid, tx, li, bn, bh, to, token, value, failed in rows
    ]


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


async def mark_failed(session: AsyncSession, chain: str, row: Awaiting) -> None:
    t = table("transactions")
    await session.execute(
        update(t).where(_row(chain, row)).values(verify_failed_hash=row.block_hash)
    )
