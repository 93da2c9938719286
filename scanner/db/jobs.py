"""``backfill_jobs``: where each backfill stands, committed with the ranges it scanned."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, insert, literal, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.db.models import BackfillJob
from scanner.db.types import UTCDateTime


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


# -- a backfill split into jobs, claimed by several workers (``scanner backfill --job-size``) ---


def _now(session: AsyncSession) -> ColumnElement[datetime]:
    """The database's clock on PostgreSQL (workers on several hosts agree); SQLite runs one."""
    if session.get_bind().dialect.name == "postgresql":
        return func.clock_timestamp()
    return literal(datetime.now(UTC), UTCDateTime())


def _later(session: AsyncSession, seconds: float) -> ColumnElement[datetime]:
    if session.get_bind().dialect.name == "postgresql":
        return func.clock_timestamp() + func.make_interval(0, 0, 0, 0, 0, 0, seconds)
    return literal(datetime.now(UTC) + timedelta(seconds=seconds), UTCDateTime())


def _pieces(chain: str, pieces: Sequence[tuple[int, int]]) -> ColumnElement[bool]:
    return and_(
        BackfillJob.chain == chain,
        tuple_(BackfillJob.from_block, BackfillJob.to_block).in_(list(pieces)),
    )


async def plan(session: AsyncSession, chain: str, pieces: Sequence[tuple[int, int]]) -> None:
    """The jobs of a split backfill, one row per piece; pieces already planned are kept (a
    second worker, or a rerun, joins what is there)."""
    postgresql = session.get_bind().dialect.name == "postgresql"
    insert_ = pg_insert if postgresql else sqlite_insert
    now = datetime.now(UTC)
    rows = [
        {
            "chain": chain,
            "from_block": a,
            "to_block": b,
            "next_block": a,
            "status": "running",
            "created_at": now,
            "updated_at": now,
        }
        for a, b in pieces
    ]
    for start in range(0, len(rows), 1000):
        await session.execute(
            insert_(BackfillJob).on_conflict_do_nothing(), rows[start : start + 1000]
        )


@dataclass(frozen=True, slots=True)
class Claimed:
    from_block: int
    to_block: int
    next_block: int
    taken_over: str | None  # the worker whose lease expired, if any


async def claim(
    session: AsyncSession, chain: str, pieces: Sequence[tuple[int, int]], worker: str, ttl: float
) -> Claimed | None:
    """The first unfinished job nobody holds (never claimed, or its holder's lease expired),
    now this worker's until ``ttl`` from now. Rows other workers are claiming are skipped
    (``FOR UPDATE SKIP LOCKED``), never waited for."""
    free = or_(BackfillJob.lease_expires_at.is_(None), BackfillJob.lease_expires_at < _now(session))
    row = (
        await session.execute(
            select(BackfillJob)
            .where(_pieces(chain, pieces), BackfillJob.status == "running", free)
            .order_by(BackfillJob.from_block)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    before = row.lease_instance
    await session.execute(
        update(BackfillJob)
        .where(BackfillJob.id == row.id)
        .values(lease_instance=worker, lease_expires_at=_later(session, ttl))
    )
    return Claimed(int(row.from_block), int(row.to_block), int(row.next_block), before)


async def earlier(
    session: AsyncSession, chain: str, pieces: Sequence[tuple[int, int]], before: int
) -> tuple[int, int]:
    """Of the unfinished jobs before block ``before``: how many, and how many nobody holds."""
    free = or_(BackfillJob.lease_expires_at.is_(None), BackfillJob.lease_expires_at < _now(session))
    row = (
        await session.execute(
            select(func.count(), func.count().filter(free)).where(
                _pieces(chain, pieces),
                BackfillJob.status != "done",
                BackfillJob.from_block < before,
            )
        )
    ).one()
    return int(row[0]), int(row[1])


async def release_claim(
    session: AsyncSession, chain: str, job: tuple[int, int], worker: str
) -> None:
    """Give the job back (its progress kept) for whoever claims the earliest job first."""
    await session.execute(
        update(BackfillJob)
        .where(*_key(chain, *job), BackfillJob.lease_instance == worker)
        .values(lease_instance=None, lease_expires_at=None)
    )


async def unfinished(session: AsyncSession, chain: str, pieces: Sequence[tuple[int, int]]) -> int:
    count = await session.execute(
        select(func.count()).where(_pieces(chain, pieces), BackfillJob.status != "done")
    )
    return int(count.scalar_one())


async def renew(
    session: AsyncSession, chain: str, job: tuple[int, int], worker: str, ttl: float
) -> bool:
    """Extend this worker's lease on the job; False when it is not this worker's any more."""
    done = await session.execute(
        update(BackfillJob)
        .where(
            *_key(chain, *job),
            BackfillJob.lease_instance == worker,
            BackfillJob.lease_expires_at > _now(session),
        )
        .values(lease_expires_at=_later(session, ttl))
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


async def advance_fenced(
    session: AsyncSession, chain: str, job: tuple[int, int], worker: str, start: int, nxt: int
) -> bool:
    """The job's progress, only if this worker still holds the job and it stands where the
    range began (the fencing check of a split backfill's commit)."""
    done = await session.execute(
        update(BackfillJob)
        .where(
            *_key(chain, *job),
            BackfillJob.lease_instance == worker,
            BackfillJob.lease_expires_at > _now(session),
            BackfillJob.next_block == start,
        )
        .values(next_block=nxt, updated_at=datetime.now(UTC))
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


async def finish_claimed(
    session: AsyncSession, chain: str, job: tuple[int, int], worker: str
) -> bool:
    done = await session.execute(
        update(BackfillJob)
        .where(*_key(chain, *job), BackfillJob.lease_instance == worker)
        .values(
            status="done", lease_instance=None, lease_expires_at=None, updated_at=datetime.now(UTC)
        )
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]
