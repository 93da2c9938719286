"""``db/bulk.py``: the same rows whatever the path. On PostgreSQL a few rows go as one prepared
statement run per row, more through ``COPY`` (and a temporary table for upserts and updates);
SQLite runs one statement per row, except for rows streamed as they are made (a statement a
part, from one JSON text). Each path must store exactly the same values."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scanner.db import bulk
from scanner.db.errors import DRIVER_ERRORS
from scanner.db.models import Payment, PaymentEvent, PaymentSum, Token
from scanner.db.sql import table

CHAIN = "ethereum"
SQLITE_ONLY = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
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


_STREAMED = ("payment_id", "type", "status_from", "status_to", "data", "created_at", "event_key")


def _streamed_event(ids: list[uuid.UUID], n: int, key: str) -> tuple[object, ...]:
    status_from = None if n % 3 == 0 else "pending"
    data = {"n": n, "note": 'żółw ✓ "quoted"', "big": 2**200}
    return (ids[n % 2], "status_changed", status_from, "confirming", data, T0, f"{key}-{n}")


async def _stored_events(session: AsyncSession) -> list[tuple[object, ...]]:
    """Every event's columns as the database holds them (SQLite: with each one's storage
    class), in id order."""
    names = ", ".join(_STREAMED[:-1])
    sql = f"SELECT {names}, event_key FROM payment_events ORDER BY id"
    if (await session.connection()).dialect.name == "sqlite":
        classes = ", ".join(f"typeof({c})" for c in _STREAMED[:-1])
        sql = f"SELECT {names}, event_key, {classes} FROM payment_events ORDER BY id"
    return [tuple(row) for row in (await session.execute(text(sql))).all()]


async def test_streamed_rows_are_stored_as_inserted_rows_are(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """Rows streamed as they are made, over more than one part (PostgreSQL: ``COPY``; SQLite:
    a statement a part, from one JSON text), are stored exactly as :func:`bulk.insert` stores
    the same rows: the same values of the same storage classes, NULLs and text beyond ASCII
    included, in the order made."""
    count = bulk.PART + 3
    async with session_factory() as session:
        _, ids = await _payments(session, 2)
        inserted = [_streamed_event(ids, n, "inserted") for n in range(count)]
        await bulk.insert(session, table("payment_events"), _STREAMED, inserted)
        made = (_streamed_event(ids, n, "streamed") for n in range(count))
        await bulk.stream(session, table("payment_events"), _STREAMED, made)
        await session.commit()
        stored = await _stored_events(session)
    assert len(stored) == 2 * count
    first, second = stored[:count], stored[count:]
    assert [row[6] for row in first] == [f"inserted-{n}" for n in range(count)]
    assert [row[6] for row in second] == [f"streamed-{n}" for n in range(count)]
    assert [row[:6] + row[7:] for row in second] == [row[:6] + row[7:] for row in first]


@SQLITE_ONLY  # PostgreSQL text holds no NUL, and COPY carries every other value
async def test_a_part_the_json_text_cannot_carry_is_stored_as_inserted(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """SQLite: a part holding text with a NUL in it (which the JSON text would not carry as
    binding stores it) is inserted row by row, once the part before it is in; the rows around
    it still go as JSON."""
    count = 2 * bulk.PART + 1
    async with session_factory() as session:
        _, ids = await _payments(session, 2)

        def event(n: int, key: str) -> tuple[object, ...]:
            row = _streamed_event(ids, n, key)
            return (row[0], "odd\x00type", *row[2:]) if n == bulk.PART + 5 else row

        await bulk.insert(
            session, table("payment_events"), _STREAMED, [event(n, "i") for n in range(count)]
        )
        await bulk.stream(
            session, table("payment_events"), _STREAMED, (event(n, "s") for n in range(count))
        )
        await session.commit()
        stored = await _stored_events(session)
        odd = f"('i-{bulk.PART + 5}', 's-{bulk.PART + 5}')"
        sizes = f"SELECT length(CAST(type AS BLOB)) FROM payment_events WHERE event_key IN {odd}"
        lengths = (await session.execute(text(sizes))).all()
    first, second = stored[:count], stored[count:]
    assert [row[:6] + row[7:] for row in second] == [row[:6] + row[7:] for row in first]
    assert second[bulk.PART + 5][1] == "odd\x00type"
    assert lengths == [(8,), (8,)]


@SQLITE_ONLY  # PostgreSQL's COPY: the server stores what was sent (the test above)
async def test_each_part_is_stored_while_the_next_one_is_made(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """SQLite: the first part's statement runs in the database's thread while the maker of the
    rows, on the event loop, is still making the second part (here: held up 0.4 s in it)."""
    async with session_factory() as session:
        _, ids = await _payments(session, 2)
        await session.execute(text("SELECT 1"))  # the transaction the parts are written in
        conn = await session.connection()
        raw = await conn.get_raw_connection()
        driver = cast(Any, raw.dbapi_connection).driver_connection
        inserts: list[float] = []

        def traced(sql: str) -> None:
            if sql.startswith("INSERT INTO payment_events"):
                inserts.append(time.perf_counter())

        await driver.set_trace_callback(traced)
        made_second: list[float] = []

        def rows() -> Iterator[tuple[object, ...]]:
            for n in range(2 * bulk.PART):
                if n == bulk.PART + 10:
                    time.sleep(0.4)  # the loop is busy making this part
                    made_second.append(time.perf_counter())
                yield _streamed_event(ids, n, "s")

        await bulk.stream(session, table("payment_events"), _STREAMED, rows())
        await driver.set_trace_callback(None)
        await session.commit()
        assert len(await _stored_events(session)) == 2 * bulk.PART
    assert len(inserts) == 2
    assert inserts[0] < made_second[0] - 0.2  # begun while the second part was being made


async def test_a_part_the_database_refuses_raises_and_writes_nothing(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    """A streamed part that breaks a unique key (an event key given twice) raises the driver's
    error as the database layer raises any (SQLite: SQLAlchemy's ``IntegrityError``, not the
    bare ``sqlite3`` one); rolled back, no streamed row is left, and the session goes on."""
    count = bulk.PART + 3
    async with session_factory() as session:
        _, ids = await _payments(session, 2)

        def event(n: int) -> tuple[object, ...]:
            return _streamed_event(ids, 7 if n == bulk.PART + 1 else n, "s")

        with pytest.raises(DRIVER_ERRORS) as raised:
            await bulk.stream(
                session, table("payment_events"), _STREAMED, (event(n) for n in range(count))
            )
        if db_backend == "sqlite":
            assert isinstance(raised.value, IntegrityError)
        await session.rollback()
        assert await _stored_events(session) == []
        await bulk.stream(session, table("payment_events"), _STREAMED, [event(0)])
        await session.commit()
        assert len(await _stored_events(session)) == 1


async def test_a_streamed_row_that_cannot_be_made_writes_none_of_them(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """The maker failing while the part before is being stored: its own error is raised once
    that part's statement is done, and the rollback leaves no streamed row."""
    async with session_factory() as session:
        _, ids = await _payments(session, 2)

        def rows() -> Iterator[tuple[object, ...]]:
            for n in range(bulk.PART + 5):
                if n == bulk.PART + 1:
                    raise ValueError("row 2001 is wrong")
                yield _streamed_event(ids, n, "s")

        with pytest.raises(ValueError, match="row 2001 is wrong"):
            await bulk.stream(session, table("payment_events"), _STREAMED, rows())
        await session.rollback()
        assert await _stored_events(session) == []
