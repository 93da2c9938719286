"""``db/bulk.py``: the same rows whatever the path. On PostgreSQL a few rows go as one prepared
statement run per row, more through ``COPY`` (and a temporary table for upserts and updates);
SQLite always runs one statement per row. Each path must store exactly the same values."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scanner.db import bulk
from scanner.db.models import Payment, PaymentEvent, PaymentSum, Token
from scanner.db.sql import table

CHAIN = "ethereum"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


async def _payments(session: AsyncSession, count: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    token = Token(id=uuid.uuid4(), chain=CHAIN, address="0x" + "aa" * 20, symbol="T", decimals=6)
    session.add(token)
    await session.flush()
    ids = sorted(uuid.uuid4() for _ in range(count))
    for n, pid in enumerate(ids):
        session.add(
            Payment(
                id=pid,
                token_id=token.id,
                chain=CHAIN,
                address=f"0x{n:040x}",
                amount=Decimal("1"),
                expires_at=T0 + timedelta(days=1),
            )
        )
    await session.commit()
    return token.id, ids


@pytest.mark.parametrize("count", [3, bulk.FEW_ROWS, bulk.FEW_ROWS + 7])
async def test_insert_upsert_and_update_store_the_same_rows_however_many(
    session_factory: async_sessionmaker[AsyncSession], count: int
) -> None:
    async with session_factory() as session:
        token, ids = await _payments(session, count)
        events = [(pid, "status_changed", "pending", "confirming", {"n": n, "big": 2**200}, T0)
                  for n, pid in enumerate(ids)]  # fmt: skip
        columns = ("payment_id", "type", "status_from", "status_to", "data", "created_at")
        await bulk.insert(session, table("payment_events"), columns, events)
        sums = ("payment_id", "token_id", "counted_value", "counted_credits", "first_block",
                "last_block", "updated_at")  # fmt: skip
        first = [(pid, token, 5, 1, 7, 7, T0) for pid in ids]
        again = [(pid, token, 10**30 + n, 2, 7, 9 + n, T0) for n, pid in enumerate(ids)]
        for rows in (first, again):
            await bulk.upsert(
                session, table("payment_sums"), sums, rows, key=("payment_id",), rewrite=sums[1:]
            )
        updated = [(pid, "confirming", Decimal(f"{n}.000001")) for n, pid in enumerate(ids)]
        await bulk.update(
            session, table("payments"), ("id", "status", "amount_received"), updated,
            key=("id",), bump="scanner_rev",
        )  # fmt: skip
        await session.commit()

        stored = (await session.execute(select(PaymentEvent).order_by(PaymentEvent.id))).scalars()
        assert [(e.payment_id, e.status_to, e.data) for e in stored] == [
            (pid, "confirming", {"n": n, "big": 2**200}) for n, pid in enumerate(ids)
        ]
        totals = (await session.execute(select(PaymentSum))).scalars().all()
        assert sorted((t.payment_id, t.counted_value, t.last_block) for t in totals) == [
            (pid, 10**30 + n, 9 + n) for n, pid in enumerate(ids)
        ]
        payments = (await session.execute(select(Payment).order_by(Payment.id))).scalars().all()
        assert [(p.id, p.status, p.amount_received, p.scanner_rev) for p in payments] == [
            (pid, "confirming", Decimal(f"{n}.000001"), 1) for n, pid in enumerate(ids)
        ]


@pytest.mark.parametrize("count", [bulk.FEW_ROWS, bulk.PART + 3])
async def test_made_rows_are_stored_as_given_rows_are(
    session_factory: async_sessionmaker[AsyncSession], count: int
) -> None:
    """Rows made as they are written (on PostgreSQL, while ``COPY`` sends the ones before them,
    across more than one part) are the rows a list would have stored, in the same order."""
    async with session_factory() as session:
        _, ids = await _payments(session, 2)
        made: list[int] = []

        def event(n: int) -> tuple[object, ...]:
            made.append(n)
            return (ids[n % 2], "status_changed", "pending", "confirming", {"n": n}, T0)

        columns = ("payment_id", "type", "status_from", "status_to", "data", "created_at")
        rows = bulk.Made(count, map(event, range(count)))
        await bulk.insert(session, table("payment_events"), columns, rows)
        await session.commit()
        with pytest.raises(RuntimeError, match="read once"):
            iter(rows)
        stored = (await session.execute(select(PaymentEvent).order_by(PaymentEvent.id))).scalars()
        assert [(e.payment_id, e.data) for e in stored] == [
            (ids[n % 2], {"n": n}) for n in range(count)
        ]
        assert made == list(range(count))  # each made once


async def test_a_row_that_cannot_be_made_writes_none_of_them(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """A maker that fails part way (a part of its rows already handed to ``COPY``) raises its
    own error, and the transaction, rolled back, leaves no row of the insert; the session goes
    on."""
    async with session_factory() as session:
        _, ids = await _payments(session, 1)

        def event(n: int) -> tuple[object, ...]:
            if n == bulk.PART + 1:
                raise ValueError("row 2001 is wrong")
            return (ids[0], "status_changed", "pending", "confirming", {"n": n}, T0)

        columns = ("payment_id", "type", "status_from", "status_to", "data", "created_at")
        count = bulk.PART + 5
        with pytest.raises(ValueError, match="row 2001 is wrong"):
            await bulk.insert(
                session,
                table("payment_events"),
                columns,
                bulk.Made(count, map(event, range(count))),
            )
        await session.rollback()
        assert (await session.execute(select(PaymentEvent))).scalars().all() == []
        await bulk.insert(session, table("payment_events"), columns, [event(0)])
        await session.commit()
        assert len((await session.execute(select(PaymentEvent))).scalars().all()) == 1
