"""``chain_states`` (the cursor) and ``blocks`` (the stored hashes reorg checks compare with)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.model import Header
from scanner.db import sweep
from scanner.db.sql import moment, now, table, unix


class Cursor(NamedTuple):
    """Where a chain's live scan stands: its last scanned block and that block's hash (None
    where no hash was stored)."""

    block: int
    hash: str | None

    @property
    def linked(self) -> tuple[int, str] | None:
        """The block and hash the next range's first block must name as its parent, if any."""
        return None if self.hash is None else (self.block, self.hash)


async def get_cursor(session: AsyncSession, chain: str) -> Cursor | None:
    cs = table("chain_states")
    row = (
        await session.execute(
            select(cs.c.last_scanned_block, cs.c.last_scanned_hash).where(cs.c.chain == chain)
        )
    ).first()
    if row is None or row[0] is None:
        return None
    return Cursor(int(row[0]), row[1])


async def init_cursor(
    session: AsyncSession, chain: str, block: int, block_hash: str | None
) -> None:
    cs = table("chain_states")
    exists = (await session.execute(select(cs.c.chain).where(cs.c.chain == chain))).first()
    if exists is None:
        values = dict(last_scanned_block=block, last_scanned_hash=block_hash, updated_at=now())
        values["swept_block"] = block  # a fresh chain's sweep begins where its scan does
        await session.execute(insert(cs).values(chain=chain, **values))


async def set_cursor(session: AsyncSession, chain: str, block: int, block_hash: str | None) -> None:
    """The cursor; the sweep's block goes no higher (a walk-back's blocks are swept again)."""
    cs = table("chain_states")
    await session.execute(
        update(cs)
        .where(cs.c.chain == chain)
        .values(
            last_scanned_block=block,
            last_scanned_hash=block_hash,
            swept_block=sweep.clamp(block),
            updated_at=now(),
        )
    )


async def record_reorg(session: AsyncSession, chain: str, depth: int) -> None:
    cs = table("chain_states")
    await session.execute(
        update(cs)
        .where(cs.c.chain == chain)
        .values(last_reorg_at=now(), last_reorg_depth=depth, updated_at=now())
    )


async def stored_headers(session: AsyncSession, chain: str, low: int, high: int) -> list[Header]:
    b = table("blocks")
    rows = await session.execute(
        select(b.c.number, b.c.hash, b.c.parent_hash, b.c.timestamp)
        .where(b.c.chain == chain, b.c.number >= low, b.c.number <= high)
        .order_by(b.c.number)
    )
    return [Header(int(n), h, p, unix(ts)) for n, h, p, ts in rows]


async def stored_timestamps(
    session: AsyncSession, chain: str, low: int, high: int
) -> dict[int, int]:
    return {h.number: h.timestamp for h in await stored_headers(session, chain, low, high)}


async def store_blocks(session: AsyncSession, chain: str, headers: Sequence[Header]) -> None:
    if not headers:
        return
    b = table("blocks")
    low, high = headers[0].number, headers[-1].number
    await session.execute(
        delete(b).where(b.c.chain == chain, b.c.number >= low, b.c.number <= high)
    )
    rows = [
        {
            "chain": chain,
            "number": h.number,
            "hash": h.hash,
            "parent_hash": h.parent_hash,
            "timestamp": moment(h.timestamp),
        }
        for h in headers
    ]
    await session.execute(insert(b), rows)


async def lowest_stored(session: AsyncSession, chain: str) -> int | None:
    """The lowest block stored for the chain (the live scan's reorg window), None when none."""
    b = table("blocks")
    found = (await session.execute(select(func.min(b.c.number)).where(b.c.chain == chain))).scalar()
    return None if found is None else int(found)


async def prune_blocks(session: AsyncSession, chain: str, below: int) -> None:
    b = table("blocks")
    await session.execute(delete(b).where(b.c.chain == chain, b.c.number < below))


async def delete_blocks_above(session: AsyncSession, chain: str, number: int) -> None:
    b = table("blocks")
    await session.execute(delete(b).where(b.c.chain == chain, b.c.number > number))
