"""``transactions.write``: a row whose transaction had no row when the range was loaded is
inserted as it is (no upsert); one seen again is upserted; a "new" row that is there after all
fails the whole write instead of making a second row or rewriting the first."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scanner.core.model import Credit
from scanner.core.plan import CreditRow
from scanner.db import transactions
from scanner.db.errors import DRIVER_ERRORS
from scanner.db.models import Payment, Token, Transaction

CHAIN = "ethereum"
TX = "0x" + "ab" * 32
OTHER_TX = "0x" + "cd" * 32


async def _payment(session: AsyncSession) -> tuple[uuid.UUID, uuid.UUID]:
    token = Token(id=uuid.uuid4(), chain=CHAIN, address="0x" + "aa" * 20, symbol="T", decimals=6)
    payment = Payment(
        id=uuid.uuid4(),
        token_id=token.id,
        chain=CHAIN,
        address="0x" + "bb" * 20,
        amount=Decimal("1"),
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    session.add(token)
    await session.flush()
    session.add(payment)
    await session.commit()
    return payment.id, token.id


def _row(pid: uuid.UUID, token_id: uuid.UUID, tx: str, value: int, *, new: bool) -> CreditRow:
    credit = Credit(tx, 0, 10, "0x" + "11" * 32, 1_900_000_000, value, late=False, orphaned=False)
    return CreditRow(
        pid, pid, token_id, credit, Decimal(value) / 10**6, 1, "pending",
        "0x" + "cc" * 20, "0x" + "bb" * 20, new=new,
    )  # fmt: skip


async def _values(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Transaction.tx_hash, Transaction.value))
    return {tx: value for tx, value in rows}


async def test_new_rows_are_inserted_and_rows_seen_again_upserted(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session:
        pid, token = await _payment(session)
        owners, stored = await transactions.owners_of(session, CHAIN, {TX})
        assert (owners, stored) == (set(), frozenset())
        await transactions.write(session, CHAIN, [_row(pid, token, TX, 5, new=True)])
        await session.commit()
        owners, stored = await transactions.owners_of(session, CHAIN, {TX, OTHER_TX})
        assert stored == frozenset({TX}) and len(owners) == 1
        # a rescan: the same key (stored: not new) and a transfer never seen (new)
        rows = [_row(pid, token, TX, 7, new=False), _row(pid, token, OTHER_TX, 9, new=True)]
        await transactions.write(session, CHAIN, rows)
        await session.commit()
        assert await _values(session) == {TX: 7, OTHER_TX: 9}


async def test_a_new_row_already_there_fails_the_write_and_changes_nothing(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session:
        pid, token = await _payment(session)
        await transactions.write(session, CHAIN, [_row(pid, token, TX, 5, new=True)])
        await session.commit()
        with pytest.raises(DRIVER_ERRORS, match=r"uq_transactions|UNIQUE"):  # COPY: asyncpg's
            rows = [_row(pid, token, OTHER_TX, 9, new=True), _row(pid, token, TX, 7, new=True)]
            await transactions.write(session, CHAIN, rows)
        await session.rollback()
        assert await _values(session) == {TX: 5}
        count = await session.scalar(select(func.count()).select_from(Transaction))
        assert count == 1


async def test_new_rows_get_random_version_4_ids_stored_as_any_uuid(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    """Ids made at once for a bulk write (enough rows for PostgreSQL's ``COPY``): each a
    distinct random version-4 uuid, stored as the column stores any uuid."""
    async with session_factory() as session:
        pid, token = await _payment(session)
        hashes = [f"0x{n:064x}" for n in range(60)]
        await transactions.write(session, CHAIN, [_row(pid, token, h, 1, new=True) for h in hashes])
        await session.commit()
        ids = list((await session.execute(select(Transaction.id))).scalars())
        if db_backend == "sqlite":
            stored = {r[0] for r in await session.execute(text("SELECT id FROM transactions"))}
        else:
            stored = {str(i) for i in ids}
    assert len(ids) == len(set(ids)) == 60
    assert all(isinstance(i, uuid.UUID) and i.version == 4 for i in ids)
    assert all(i.variant == uuid.RFC_4122 for i in ids)
    assert stored == {str(uuid.UUID(str(i))) for i in ids}  # 36 lower-case characters each
    assert all(len(s) == 36 and s == s.lower() for s in stored)
