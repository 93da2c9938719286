"""Helpers every statement module shares: tables, times, one-parameter IN lists, bulk updates.

Statements are written in SQLAlchemy Core over the models' tables so that bulk writes go out as
one executemany (asyncpg / sqlite) instead of one ORM object per row. Every function of the
statement modules runs inside the caller's transaction and never commits.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, TypeVar

import orjson
from sqlalchemy import String, Table, any_, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement

from scanner.db.models import Base

OPEN: Final = ("pending", "confirming")
CHUNK: Final = 500
T = TypeVar("T")


def table(name: str) -> Table:
    return Base.metadata.tables[name]


def now() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=4096)  # a range's rows repeat their blocks' times; a datetime is immutable
def moment(unix: float) -> datetime:
    """Unix seconds → an aware UTC datetime (the same object for the same time, while it is
    among the last few thousand: a bulk write converts a value once per run of it)."""
    return datetime.fromtimestamp(unix, tz=UTC)


def seconds(value: datetime) -> float:
    """A datetime read from the database (aware; naive means UTC) → unix seconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def unix(value: datetime | None) -> int:
    """Whole unix seconds (block times); None → 0."""
    return 0 if value is None else int(seconds(value))


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def in_strings(session: AsyncSession, expr: Any, values: Collection[str]) -> Any:
    """``expr IN values`` with ONE bound parameter however many values: ``= ANY(:array)`` on
    PostgreSQL, ``IN (SELECT value FROM json_each(:json))`` on SQLite; both plan as index
    lookups on ``expr`` per value. An IN list costs a placeholder per value to render and bind
    (thousands per range on the hot path) and must be cut into chunks. On PostgreSQL not ``IN
    (SELECT unnest(:array))``: that is a join, and on a table not analyzed yet (a gateway's
    fresh rows) the planner put the array on its inner side, comparing every row with every
    value (a second a range at 1,000 payments and 1,000 addresses); ``= ANY`` is a condition
    on the one table, probed through its index value by value."""
    items = sorted(values)
    if is_postgres(session):
        return expr == any_(bindparam(None, items, type_=ARRAY(String)))
    rows = func.json_each(bindparam(None, orjson.dumps(items).decode(), type_=String))
    return expr.in_(select(rows.table_valued("value").c.value).scalar_subquery())


class NotIndexed(ColumnElement[Any]):
    """A column that no index may serve in this term: SQLite's documented ``+column`` (unary
    plus), the column itself elsewhere. SQLite gathers no statistics by itself, and without them
    it guesses: it took ``payments.chain = ?`` through ``ix_payments_lookup`` (every payment
    of the chain) over a primary-key lookup of a few ids."""

    inherit_cache = True

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(NotIndexed)
def _not_indexed(element: NotIndexed, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column, **kw))


@compiles(NotIndexed, "sqlite")
def _not_indexed_sqlite(element: NotIndexed, compiler: Any, **kw: Any) -> str:
    return "+" + str(compiler.process(element.column, **kw))


def compare(column: Any, op: str, instant: datetime) -> Any:
    """``column <op> instant`` for a timestamp column. On SQLite every time is stored in the one
    canonical text form (the column type writes it, triggers rewrite what a gateway wrote), so
    the comparison is plain text order and an index on the column serves it."""
    return column.op(op)(instant)


def locked(stmt: Any, lock: bool) -> Any:
    return stmt.with_for_update() if lock else stmt


async def update_by_id(
    session: AsyncSession,
    target: Table,
    rows: list[dict[str, Any]],
    also: dict[str, Any] | None = None,
) -> None:
    """One executemany ``UPDATE target SET … WHERE id = …``; every row has the same keys.
    ``also``: SQL expressions set on every row (``scanner_rev = scanner_rev + 1``)."""
    if not rows:
        return
    columns = [name for name in rows[0] if name != "id"]
    values: dict[str, Any] = {name: bindparam(f"b_{name}") for name in columns}
    stmt = update(target).where(target.c.id == bindparam("b_id")).values({**values, **(also or {})})
    await session.execute(stmt, [{f"b_{k}": v for k, v in row.items()} for row in rows])
