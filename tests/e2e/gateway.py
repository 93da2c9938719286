"""The gateway's side of the gateway-row tests: rows written and edited with plain SQL, values
spelled exactly as a careless gateway would (SQL literals, so that SQLite keeps their types)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from scanner.testkit.settings import CHAIN
from tests.e2e.harness import Harness


def sql_literal(value: Any) -> str:
    """``value`` as a SQL literal: ``None`` → NULL, numbers bare (SQLite keeps them numeric),
    text quoted."""
    if value is None:
        return "NULL"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass(frozen=True)
class Row:
    """A payments row; ``None`` for a column means the gateway's usual value."""

    id: Any
    address: Any
    amount: Any = "5"
    status: Any = None
    created_at: Any = None
    expires_at: Any = None
    token_id: Any = None


async def insert_row(h: Harness, row: Row) -> None:
    now = h.now()
    utc = "+00:00" if h.engine.dialect.name == "postgresql" else ""
    token_id = row.token_id or await h.token_id(h.token)
    columns = {
        "id": row.id,
        "token_id": token_id,
        "chain": CHAIN,
        "address": row.address,
        "amount": row.amount,
        "created_at": row.created_at if row.created_at is not None else iso(now - 60) + utc,
        "expires_at": row.expires_at if row.expires_at is not None else iso(now + 3600) + utc,
    }
    if row.status is not None:
        columns["status"] = row.status
    names = ", ".join(columns)
    values = ", ".join(sql_literal(v) for v in columns.values())
    async with h.engine.begin() as conn:
        await conn.execute(text(f"INSERT INTO payments ({names}) VALUES ({values})"))


async def edit(h: Harness, payment_id: str, **columns: Any) -> None:
    """UPDATE a payment as a gateway does (it knows nothing of the scanner's columns)."""
    assignments = ", ".join(f"{name} = {sql_literal(value)}" for name, value in columns.items())
    async with h.engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE payments SET {assignments} WHERE {same_id(h, 'id', payment_id)}")
        )


def same_id(h: Harness, column: str, stored_id: Any) -> str:
    """SQL: ``column`` holds ``stored_id`` (PostgreSQL's uuid type reads any uuid spelling)."""
    if h.engine.dialect.name == "postgresql":
        return f"{column} = CAST({sql_literal(stored_id)} AS uuid)"
    return f"{column} = {sql_literal(stored_id)}"


async def events_of(h: Harness, stored_id: Any) -> list[tuple[str, Any]]:
    """(type, data) of the events written against the id as stored."""
    async with h.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT type, data FROM payment_events"
                f" WHERE {same_id(h, 'payment_id', stored_id)} ORDER BY id"
            )
        )
        return [(r[0], json.loads(r[1]) if isinstance(r[1], str) else r[1]) for r in rows]


async def row_of(h: Harness, stored_id: Any) -> dict[str, Any]:
    async with h.engine.connect() as conn:
        found = (
            await conn.execute(
                text(
                    "SELECT status, amount_received, confirmations FROM payments"
                    f" WHERE {same_id(h, 'id', stored_id)}"
                )
            )
        ).one()
        credited = (
            await conn.execute(
                text(
                    f"SELECT count(*) FROM transactions WHERE {same_id(h, 'payment_id', stored_id)}"
                )
            )
        ).scalar_one()
    return {
        "status": found[0],
        "amount_received": str(found[1]),
        "confirmations": found[2],
        "transactions": int(credited),
    }
