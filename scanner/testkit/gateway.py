"""What a gateway writes, as plain SQL (never the scanner's models), for tests and benchmarks.

Ids and times are bound as each database takes them from a gateway: on PostgreSQL a uuid and an
aware datetime, on SQLite 36-character text and the scanner's text form of a UTC time.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"

_INSERT_PAYMENT = text(
    "INSERT INTO payments (id, token_id, chain, address, amount, expires_at, created_at,"
    " seen_at_block) VALUES (:id, :token, :chain, :address, :amount, :expires, :created, :seen)"
)


def db_id(db: AsyncEngine | AsyncConnection, value: str | uuid.UUID) -> Any:
    """An id as ``db`` takes it in a bind: a uuid on PostgreSQL, text on SQLite."""
    if db.dialect.name == "postgresql":
        return value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    return str(value)


def db_time(db: AsyncEngine | AsyncConnection, unix: float) -> Any:
    """A UTC time (unix seconds) as ``db`` takes it in a bind."""
    moment = datetime.fromtimestamp(unix, tz=UTC)
    return moment if db.dialect.name == "postgresql" else moment.strftime(SQLITE_TIME)


async def token_row_id(conn: AsyncConnection, chain: str, address: str) -> Any:
    """The id of the ``tokens`` row of ``address`` on ``chain`` (the scanner inserts those)."""
    found = await conn.execute(
        text("SELECT id FROM tokens WHERE chain = :c AND address = :a"),
        {"c": chain, "a": address.lower()},
    )
    return found.scalar_one()


@dataclass(frozen=True)
class NewPayment:
    """A payment row as the gateway writes it; ``amount`` in whole token units, as text."""

    id: str | uuid.UUID
    token_id: str | uuid.UUID | None  # None: the chain's native coin
    chain: str
    address: str
    amount: str
    expires_at: float  # unix seconds
    created_at: float
    seen_at_block: int | None = None


async def insert_payments(conn: AsyncConnection, payments: Sequence[NewPayment]) -> None:
    """INSERT ``payments`` as a gateway does: plain SQL, one executemany."""
    rows = [
        {
            "id": db_id(conn, p.id),
            "token": None if p.token_id is None else db_id(conn, p.token_id),
            "chain": p.chain,
            "address": p.address,
            "amount": p.amount,
            "expires": db_time(conn, p.expires_at),
            "created": db_time(conn, p.created_at),
            "seen": p.seen_at_block,
        }
        for p in payments
    ]
    if rows:
        await conn.execute(_INSERT_PAYMENT, rows)
