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
