"""What the sweep stores (``chain_states``: its swept block and the logs it found missing), and
the two questions it asks before it writes anything: which addresses are watched, which
transfers are stored already."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.db.sql import in_strings, now, table


async def swept(session: AsyncSession, chain: str) -> int | None:
    """The newest block the sweep has read again (None: it has not begun)."""
    cs = table("chain_states")
    stmt = select(cs.c.swept_block).where(cs.c.chain == chain)
    value = (await session.execute(stmt)).scalar_one_or_none()
    return None if value is None else int(value)


async def advance(session: AsyncSession, chain: str, block: int, missed: int = 0) -> None:
    """The sweep has read every block up to ``block`` again, and credited ``missed`` transfers
    that the first read had left out."""
    cs = table("chain_states")
    values: dict[str, Any] = {"swept_block": block}
    if missed:
        values["logs_missed"] = cs.c.logs_missed + missed
        values["last_logs_missed_at"] = now()
    await session.execute(update(cs).where(cs.c.chain == chain).values(**values))


def clamp(block: int) -> Any:
    """``swept_block`` no higher than ``block``: what a cursor moved to ``block`` sets, so that
    blocks a reorg walked back over are swept again once final (forward it changes nothing)."""
    column = table("chain_states").c.swept_block
    return case((column > block, block), else_=column)


async def watched_among(session: AsyncSession, chain: str, forms: Collection[str]) -> set[str]:
    """The addresses, as written, of the payments of ``chain`` (whatever their token or state)
    written in one of ``forms`` (lower-case spellings; ``ix_payments_lookup``)."""
    if not forms:
        return set()
    p = table("payments")
    stmt = select(p.c.address).where(
        p.c.chain == chain, in_strings(session, func.lower(p.c.address), forms)
    )
    return {r[0] for r in await session.execute(stmt.distinct()) if isinstance(r[0], str)}


async def stored_keys(
    session: AsyncSession, chain: str, tx_hashes: Collection[str]
) -> set[tuple[str, int]]:
    """The (tx_hash, log_index) of the credits (not orphaned) of ``tx_hashes``, in whatever
    block they are stored (the chain's unique key serves it)."""
    if not tx_hashes:
        return set()
    t = table("transactions")
    stmt = select(t.c.tx_hash, t.c.log_index).where(
        t.c.chain == chain,
        in_strings(session, t.c.tx_hash, tx_hashes),
        t.c.status != "orphaned",
    )
    return {(str(r[0]), int(r[1])) for r in await session.execute(stmt)}


async def status(session: AsyncSession, chain: str) -> tuple[int | None, int, datetime | None]:
    """The swept block, the transfers found missing so far and when the last one was."""
    cs = table("chain_states")
    stmt = select(cs.c.swept_block, cs.c.logs_missed, cs.c.last_logs_missed_at)
    row = (await session.execute(stmt.where(cs.c.chain == chain))).first()
    if row is None:
        return None, 0, None
    return row[0], int(row[1] or 0), row[2]
