"""The gateway's side of the interface: plain SQL, exactly as docs/gateway.md shows it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scanner.db.models import Payment

TOKEN_ID = uuid.UUID("5f0e3c1a-9b7d-4c2e-8a61-3d4b5c6e7f80")
PAYMENT_ID = uuid.UUID("0b6c8f2e-4d1a-4f3b-9c7e-5a2d1e0f9b84")

# docs/gateway.md's statements, read from the page. Amounts are quoted: SQLite parses an
# unquoted 1234567890.123456789 as a float before the column sees it. Ids are lower-case.
# Times are UTC.
README_TOKEN_INSERT = """
INSERT INTO tokens (id, chain, address, symbol, decimals)
VALUES ('5f0e3c1a-9b7d-4c2e-8a61-3d4b5c6e7f80', 'ethereum',
        '0x6b175474e89094c44da98b954eedeac495271d0f', 'DAI', 18)
"""


def _documented_inserts() -> dict[str, str]:
    """The page's ``INSERT INTO payments`` for each database, as the gateway copies them."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "gateway.md").read_text("utf-8")
    section = page[page.index("## Creating a payment") :]
    sql = section[section.index("```sql\n") + 7 : section.index("```\n", section.index("```sql"))]
    postgres, sqlite = sql.split("-- SQLite")
    found = {"postgresql": postgres, "sqlite": sqlite.split("\n", 1)[1]}
    return {k: v[v.index("INSERT") :].strip().rstrip(";") for k, v in found.items()}


README_PAYMENT_INSERT = _documented_inserts()
LOOKUP = (
    "SELECT id FROM payments WHERE chain = 'ethereum' "
    "AND token_id = '5f0e3c1a-9b7d-4c2e-8a61-3d4b5c6e7f80' "
    "AND lower(address) IN ('0xabc0000000000000000000000000000000000def')"
)


async def _insert_readme_payment(session: AsyncSession, backend: str) -> None:
    await session.execute(text(README_TOKEN_INSERT))
    await session.execute(text(README_PAYMENT_INSERT[backend]))
    await session.commit()


async def test_the_readme_insert_gives_an_exact_pending_payment(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    async with session_factory() as session:
        await _insert_readme_payment(session, db_backend)
        raw_amount = (await session.execute(text("SELECT amount FROM payments"))).scalar()
        payment = await session.get(Payment, PAYMENT_ID)
    assert str(raw_amount) == "1234567890.123456789"
    assert payment is not None
    assert payment.amount == Decimal("1234567890.123456789")
    assert payment.token_id == TOKEN_ID
    assert payment.status == "pending"
    assert payment.amount_received == Decimal(0) and payment.confirmations == 0
    assert payment.detected_in_block is None and payment.seen_at_block is None
    assert payment.expires_at == datetime(2030, 1, 1, 14, 30, tzinfo=UTC)
    now = datetime.now(UTC)
    assert abs(now - payment.created_at) < timedelta(minutes=1)
    assert abs(now - payment.updated_at) < timedelta(minutes=1)


async def test_native_coin_payments_have_no_token(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    native = README_PAYMENT_INSERT[db_backend].replace(
        "'5f0e3c1a-9b7d-4c2e-8a61-3d4b5c6e7f80',", "NULL,"
    )
    async with session_factory() as session:
        await session.execute(text(native))
        await session.commit()
        payment = await session.get(Payment, PAYMENT_ID)
    assert payment is not None and payment.token_id is None


async def test_an_unquoted_amount_loses_digits_on_sqlite_only(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    unquoted = README_PAYMENT_INSERT[db_backend].replace(
        "'1234567890.123456789'", "1234567890.123456789"
    )
    async with session_factory() as session:
        await session.execute(text(README_TOKEN_INSERT))
        await session.execute(text(unquoted))
        await session.commit()
        payment = await session.get(Payment, PAYMENT_ID)
    assert payment is not None
    exact = payment.amount == Decimal("1234567890.123456789")
    assert exact is (db_backend == "postgresql")


async def test_addresses_match_case_insensitively_through_the_lookup_index(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    async with session_factory() as session:
        await _insert_readme_payment(session, db_backend)
        found = (await session.execute(text(LOOKUP))).scalars().all()
        assert [uuid.UUID(str(v)) for v in found] == [PAYMENT_ID]
        if db_backend == "sqlite":
            plan = await session.execute(text("EXPLAIN QUERY PLAN " + LOOKUP))
        else:
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = await session.execute(text("EXPLAIN " + LOOKUP))
        shown = " ".join(str(row[-1]) for row in plan)
    assert "ix_payments_lookup" in shown


async def test_the_orm_sees_the_same_row_by_lower_address(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    async with session_factory() as session:
        await _insert_readme_payment(session, db_backend)
        stmt = select(Payment.id).where(
            Payment.chain == "ethereum",
            Payment.token_id == TOKEN_ID,
            func.lower(Payment.address).in_(["0xabc0000000000000000000000000000000000def"]),
        )
        assert (await session.execute(stmt)).scalars().all() == [PAYMENT_ID]
