"""``backfill_jobs``: where each backfill stands, committed with the ranges it scanned."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import ColumnElement, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.db.models import BackfillJob


def _key(chain: str, from_block: int, to_block: int) -> list[ColumnElement[bool]]:
    return [
        BackfillJob.chain == chain,
        BackfillJob.from_block == from_block,
        BackfillJob.to_block == to_block,
    ]


async def peek(session: AsyncSession, chain: str, from_block: int, to_block: int) -> int:
    """Where a run with these arguments would start, writing nothing."""
    row = (
        await session.execute(
            select(BackfillJob.next_block, BackfillJob.status).where(
                *_key(chain, from_block, to_block)
            )
        )
    ).first()
    if row is None or row.status == "done":
        return from_block
    return int(row.next_block)


async def start(session: AsyncSession, chain: str, from_block: int, to_block: int) -> int:
    """Resume an unfinished job with these arguments, or start one (again) from the beginning."""
    row = (
        await session.execute(
            select(BackfillJob).where(*_key(chain, from_block, to_block)).with_for_update()
        )
    ).scalar_one_or_none()
    now = datetime.now(UTC)
    if row is None:
        await session.execute(
            insert(BackfillJob).values(
                chain=chain,
                from_block=from_block,
                to_block=to_block,
                next_block=from_block,
                status="running",
                created_at=now,
                updated_at=now,
            )
        )
        return from_block
    if row.status == "done":
        row.next_block = from_block
        row.status = "running"
        row.updated_at = now
        return from_block
    return int(row.next_block)


async def advance(
    session: AsyncSession, chain: str, from_block: int, to_block: int, next_block: int
) -> None:
    await session.execute(
        update(BackfillJob)
        .where(*_key(chain, from_block, to_block))
        .values(next_block=next_block, updated_at=datetime.now(UTC))
    )


async def finish(session: AsyncSession, chain: str, from_block: int, to_block: int) -> None:
    await session.execute(
        update(BackfillJob)
        .where(*_key(chain, from_block, to_block))
        .values(status="done", updated_at=datetime.now(UTC))
    )
