"""Representation: the same values, exactly, on both databases."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg
from sqlalchemy.dialects.sqlite import aiosqlite as sqlite_aiosqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.types import TypeEngine

from scanner.db.models import Block, Payment, PaymentEvent, Token, Transaction
from scanner.db.models.payment_events import EVENT_DATA
from scanner.db.types import (
    BaseUnits,
    ExactDecimal,
    StoredKey,
    UTCDateTime,
    UUIDType,
    bulk_binder,
    bulk_column,
    canonical_decimal,
    parse_timestamp,
    to_decimal,
)

UINT256_MAX = 2**256 - 1
EIGHTEEN_DECIMALS = Decimal("123456789.123456789012345678")
CANONICAL = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _token(**overrides: Any) -> Token:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "chain": "ethereum",
        "address": "0x" + "aa" * 20,
        "symbol": "USDT",
        "decimals": 18,
    }
    return Token(**(values | overrides))


def _payment(token: Token | None, **overrides: Any) -> Payment:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "token_id": token.id if token else None,
        "chain": "ethereum",
        "address": "0x" + "bb" * 20,
        "amount": Decimal("25.5"),
        "expires_at": T0,
    }
    return Payment(**(values | overrides))


def _transaction(payment: Payment, **overrides: Any) -> Transaction:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "payment_id": payment.id,
        "chain": "ethereum",
        "tx_hash": "0x" + "11" * 32,
        "log_index": 0,
        "block_number": 100,
        "block_hash": "0x" + "22" * 32,
        "block_timestamp": T0,
        "from_address": "0x" + "cc" * 20,
        "to_address": payment.address,
        "token_id": payment.token_id,
        "value": UINT256_MAX,
        "amount": EIGHTEEN_DECIMALS,
    }
    return Transaction(**(values | overrides))


# -- pure conversions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("25.50"), "25.5"),
        (Decimal("1E+2"), "100"),
        (Decimal("0.000"), "0"),
        (Decimal("1.000000000000000001"), "1.000000000000000001"),
        (Decimal("-3"), "-3"),
    ],
)
def test_canonical_decimal(value: Decimal, expected: str) -> None:
    assert canonical_decimal(value) == expected


@pytest.mark.parametrize("bad", [1.5, "NaN", "Infinity", "abc", True])
def test_inexact_or_invalid_amounts_are_refused(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        to_decimal(bad)


@pytest.mark.parametrize(
    "written",
    [
        "2026-01-01 10:00:00",
        "2026-01-01 10:00:00.000000",
        "2026-01-01T10:00:00",
        "2026-01-01T10:00:00Z",
        "2026-01-01T10:00:00.000Z",
        "2026-01-01T10:00:00+00:00",
        "2026-01-01 12:00:00+02:00",
        "2026-01-01T05:00:00-05:00",
        datetime(2026, 1, 1, 11, 0, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_any_iso_form_reads_as_aware_utc(written: object) -> None:
    parsed = parse_timestamp(written)
    assert parsed == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert parsed.tzinfo is UTC


# -- through the database ------------------------------------------------------------------------


async def test_amounts_round_trip_exactly(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    token = _token()
    payment = _payment(token, amount=Decimal("1.000000000000000001"))
    tx = _transaction(payment)
    async with session_factory() as session:
        session.add(token)
        await session.flush()
        session.add(payment)
        await session.flush()
        session.add(tx)
        await session.commit()
    async with session_factory() as session:
        stored = await session.get(Transaction, tx.id)
        stored_payment = await session.get(Payment, payment.id)
    assert stored is not None and stored_payment is not None
    assert stored.value == UINT256_MAX and type(stored.value) is int
    assert stored.amount == EIGHTEEN_DECIMALS and isinstance(stored.amount, Decimal)
    assert stored_payment.amount == Decimal("1.000000000000000001")
    assert stored_payment.amount_received == 0 and isinstance(
        stored_payment.amount_received, Decimal
    )


async def test_base_units_refuse_fractions(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    payment = _payment(None)
    async with session_factory() as session:
        session.add(payment)
        await session.flush()
        session.add(_transaction(payment, value=Decimal("1.5")))
        with pytest.raises(Exception, match="integer"):
            await session.flush()


async def test_uuids_are_native_on_postgresql_and_36_lower_case_chars_on_sqlite(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    token = _token(id=uuid.UUID("6F1C2A7E-8F43-4D0B-9A51-2B7D8C4E9F10"))
    async with session_factory() as session:
        session.add(token)
        await session.commit()
        if db_backend == "sqlite":
            row = (await session.execute(text("SELECT id, typeof(id) FROM tokens"))).one()
            assert tuple(row) == ("6f1c2a7e-8f43-4d0b-9a51-2b7d8c4e9f10", "text")
        else:
            kind = (await session.execute(text("SELECT pg_typeof(id)::text FROM tokens"))).scalar()
            assert kind == "uuid"
        loaded = (await session.execute(select(Token.id))).scalar_one()
    assert loaded == token.id and isinstance(loaded, uuid.UUID)


async def test_timestamps_are_aware_utc_and_compare_in_sql(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    plus_two = timezone(timedelta(hours=2))
    early = _payment(None, expires_at=datetime(2030, 1, 1, 13, 0, tzinfo=plus_two))  # 11:00 UTC
    late = _payment(None, expires_at=T0)  # 12:00 UTC
    async with session_factory() as session:
        session.add_all([late, early])
        await session.commit()
        before_noon = select(Payment.id).where(Payment.expires_at < T0)
        assert (await session.execute(before_noon)).scalars().all() == [early.id]
        ordered = select(Payment.expires_at).order_by(Payment.expires_at)
        values = (await session.execute(ordered)).scalars().all()
        assert values == [T0 - timedelta(hours=1), T0]
        assert all(v.tzinfo is UTC for v in values)
        created = (await session.execute(select(Payment.created_at))).scalars().all()
        assert all(abs(datetime.now(UTC) - c) < timedelta(minutes=1) for c in created)
        if db_backend == "sqlite":
            raw = await session.execute(text("SELECT expires_at, created_at FROM payments"))
            assert all(CANONICAL.match(v) for row in raw for v in row)


async def test_naive_datetimes_are_refused(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session:
        session.add(_payment(None, expires_at=datetime(2030, 1, 1)))
        with pytest.raises(Exception, match="naive"):
            await session.flush()


async def test_gateway_timestamp_forms_are_read_back_as_utc(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    forms = ["2026-01-01T10:00:00Z", "2026-01-01 12:00:00+02:00", "2026-01-01T10:00:00.000+00:00"]
    if db_backend == "sqlite":  # PostgreSQL reads a zone-less literal in the session's TimeZone
        forms += ["2026-01-01 10:00:00", "2026-01-01T10:00:00"]
    async with session_factory() as session:
        for number, form in enumerate(forms):  # literals, as a gateway's plain SQL has them
            await session.execute(
                text(
                    "INSERT INTO blocks (chain, number, hash, parent_hash, timestamp) "
                    f"VALUES ('ethereum', {number}, '0x1', '0x0', '{form}')"
                )
            )
        await session.commit()
        stamps = (await session.execute(select(Block.timestamp))).scalars().all()
    assert stamps == [datetime(2026, 1, 1, 10, 0, tzinfo=UTC)] * len(forms)


async def test_payment_events_autoincrement_and_hold_json(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    payment = _payment(None)
    async with session_factory() as session:
        session.add(payment)
        await session.flush()
        first = PaymentEvent(
            payment_id=payment.id,
            type="transfer_detected",
            data={"amount": "1.000000000000000001", "log_index": 3},
        )
        second = PaymentEvent(
            payment_id=payment.id,
            type="status_changed",
            status_from="pending",
            status_to="confirming",
        )
        session.add_all([first, second])
        await session.commit()
    async with session_factory() as session:
        events = (await session.execute(select(PaymentEvent).order_by(PaymentEvent.id))).scalars()
        loaded = list(events)
    assert [e.type for e in loaded] == ["transfer_detected", "status_changed"]
    assert loaded[1].id > loaded[0].id
    assert loaded[0].data == {"amount": "1.000000000000000001", "log_index": 3}
    assert loaded[1].data == {}
    assert loaded[0].created_at.tzinfo is UTC


async def test_server_defaults_of_tokens_and_transactions(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    token = _token()
    payment = _payment(token)
    async with session_factory() as session:
        session.add(token)
        await session.flush()
        session.add(payment)
        await session.flush()
        tx = _transaction(payment)
        session.add(tx)
        await session.commit()
    async with session_factory() as session:
        stored_token = await session.get(Token, token.id)
        stored_tx = await session.get(Transaction, tx.id)
    assert stored_token is not None and stored_token.enabled is True
    assert stored_tx is not None
    assert (stored_tx.status, stored_tx.late, stored_tx.confirmations) == ("pending", False, 0)
    assert stored_tx.created_at.tzinfo is UTC


async def test_updated_at_moves_on_update(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    payment = _payment(None)
    async with session_factory() as session:
        session.add(payment)
        await session.commit()
        await session.execute(text("UPDATE payments SET updated_at = '2020-01-01 00:00:00.000000'"))
        await session.commit()
        stored = await session.get(Payment, payment.id, populate_existing=True)
        assert stored is not None and stored.updated_at.year == 2020
        stored.status = "confirming"
        await session.commit()
        await session.refresh(stored)
    assert stored.updated_at > datetime(2025, 1, 1, tzinfo=UTC)


class DriverUUID(uuid.UUID):
    """A uuid as a driver reads it (asyncpg's own class is a subclass of uuid.UUID)."""


_BULK_VALUES: dict[str, list[object]] = {
    "uuid": [uuid.UUID(int=7), uuid.uuid4(), StoredKey("Order-1001"), DriverUUID(int=9),
             "0A0B0C0D-0000-4000-8000-0000000000FF"],
    "exact": [Decimal("25.50"), Decimal(0), Decimal("-1.5E+3"), EIGHTEEN_DECIMALS, 7, "12.0",
              Decimal("NaN"), Decimal("Infinity"), 1.5, True],
    "units": [0, 5, UINT256_MAX, -3, Decimal("7E+6"), "12", Decimal("1.5"), True, 2.0],
    "json": [{"amount_received": 5, "late": False}, {"value": UINT256_MAX, "tx": "0xab"},
             {"reason": "ünïcode \"quoted\""}, {"nested": {"a": [1, None, 2.5]}}],
    "time": [T0, T0.astimezone(timezone(timedelta(hours=2))), "2030-01-01T12:00:00Z",
             datetime(2030, 1, 1, 12, 0), 1_900_000_000],
}  # fmt: skip


def _column_type(kind: str) -> TypeEngine[Any]:
    """The column type of a kind of :data:`_BULK_VALUES`."""
    types: dict[str, TypeEngine[Any]] = {
        "uuid": UUIDType(),
        "exact": ExactDecimal(),
        "units": BaseUnits(),
        "json": EVENT_DATA,
    }
    return types.get(kind, UTCDateTime())


@pytest.mark.parametrize("kind", sorted(_BULK_VALUES))
@pytest.mark.parametrize(
    "dialect",
    [pg_asyncpg.dialect(), sqlite_aiosqlite.dialect()],  # type: ignore[no-untyped-call]
)
def test_bulk_binder_gives_what_the_column_type_gives(kind: str, dialect: Dialect) -> None:
    """A bulk write's shortcut per value stores exactly what the type's own conversion stores,
    and refuses what it refuses (with the same error)."""
    column_type = _column_type(kind)
    full = column_type.dialect_impl(dialect).bind_processor(dialect)
    fast = bulk_binder(column_type, dialect)
    assert full is not None and fast is not None
    for value in _BULK_VALUES[kind]:
        try:
            expected: object = full(value)
        except (TypeError, ValueError) as exc:
            with pytest.raises(type(exc), match=re.escape(str(exc))):
                fast(value)
            continue
        got = fast(value)
        if kind == "json":  # jsonb stores the value parsed: the text's spacing is not kept
            assert isinstance(got, str) and isinstance(expected, str)
            got, expected = json.loads(got), json.loads(expected)
        assert (type(got), got) == (type(expected), expected), value


#: Per kind, a column of the one Python type the scanner binds (taken whole, at once).
_BOUND_COLUMNS: dict[str, list[object]] = {
    "uuid": [uuid.UUID(int=7), DriverUUID(int=9), uuid.uuid4()],
    "exact": [Decimal("25.50"), Decimal(0), EIGHTEEN_DECIMALS, Decimal("-1.5E+3")],
    "units": [0, 5, UINT256_MAX, 7],
    "time": [T0, T0 + timedelta(seconds=1), T0],
}


@pytest.mark.parametrize("kind", sorted(_BULK_VALUES))
@pytest.mark.parametrize(
    "dialect",
    [pg_asyncpg.dialect(), sqlite_aiosqlite.dialect()],  # type: ignore[no-untyped-call]
)
def test_a_column_converted_at_once_is_what_each_value_gives(kind: str, dialect: Dialect) -> None:
    """A bulk write's whole-column shortcut gives, value by value, what the type's own
    conversion gives, or declines the column (then each value goes through the binder): a
    column with a None, a bool, an odd type, a value the type refuses or converts is never
    taken as it is."""
    column_type = _column_type(kind)
    full = column_type.dialect_impl(dialect).bind_processor(dialect)
    whole = bulk_column(column_type, dialect)
    assert full is not None
    if whole is None:  # no shortcut for the type here: nothing to compare
        assert (kind, dialect.name) in {("json", "postgresql"), ("json", "sqlite"),
                                        ("exact", "sqlite"), ("time", "sqlite")}  # fmt: skip
        return
    bound = _BOUND_COLUMNS[kind]
    columns = [bound, *([value] * 2 for value in _BULK_VALUES[kind]), [*bound, None]]
    taken = 0
    for column in columns:
        got = whole(column)
        if got is None:
            continue
        taken += 1
        expected = [None if value is None else full(value) for value in column]
        assert [(type(g), g) for g in got] == [(type(e), e) for e in expected], column
    assert whole(bound) is not None and taken >= 2
    assert whole([*bound, True]) is None and whole([*bound, "7"]) is None
