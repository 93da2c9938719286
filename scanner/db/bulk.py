"""Bulk writes: many rows in one round trip, without SQLAlchemy's per-row statement machinery.

PostgreSQL: ``COPY`` (asyncpg's ``copy_records_to_table``) into the table, or into a temporary
table that one ``INSERT … ON CONFLICT`` or ``UPDATE … FROM`` applies. SQLite: one
``executemany`` of plain tuples. Each value goes through its column's own type (db/types.py),
once per distinct object (a batch's one timestamp is converted once), or a whole column at
once when every value in it is of the type the scanner binds (its ids, its base units), so a
row is stored exactly as an ORM insert would store it. Everything runs in the caller's transaction.

Rows an insert is given as :class:`Made` are made only as they are written: on PostgreSQL a
part at a time while the server stores the parts ``COPY`` sent before, so the Python that
makes them (and converts them) runs beside the server's work instead of before it.
:func:`stream` does the same on SQLite, a part at a time as one statement that the database's
thread runs while the next part is made (:func:`_sqlite_parts`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from itertools import islice
from typing import Any, Final

import orjson
from sqlalchemy import Table, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from scanner.db.types import ConvertColumn, bulk_binder, bulk_column

Row = Sequence[Any]
#: A column's conversion per value (None: none), and at once where every value allows it.
Processor = tuple[Callable[[Any], Any] | None, ConvertColumn | None]


class Made:
    """``count`` rows, made by ``rows`` (an iterator) only as they are written; read once."""

    def __init__(self, count: int, rows: Iterable[Row]) -> None:
        self._count = count
        self._rows: Iterator[Row] | None = iter(rows)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Row]:
        rows, self._rows = self._rows, None
        if rows is None:
            raise RuntimeError("made rows are read once")
        return rows


async def insert(
    session: AsyncSession, table: Table, columns: Sequence[str], rows: Sequence[Row] | Made
) -> None:
    """``INSERT INTO table (columns)`` every row."""
    if not len(rows):
        return
    conn = await session.connection()
    if _copies(conn, rows):
        await _copy(conn, table.name, columns, _converting(conn.dialect, table, columns, rows))
        return
    values = _converted(conn.dialect, table, columns, list(rows))
    await conn.exec_driver_sql(_insert_sql(conn, table.name, columns), values)


async def stream(
    session: AsyncSession, table: Table, columns: Sequence[str], rows: Iterable[Row]
) -> None:
    """Insert every row into ``table`` as ``rows`` makes it, a :data:`PART` at a time,
    converted as :func:`insert` converts it, and stored while the next part is made: by
    ``COPY`` on PostgreSQL, the server storing the parts sent before; on SQLite by one
    statement a part, run by the database's thread (:func:`_sqlite_parts`). How many rows
    there will be need not be known beforehand."""
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        await _copy(conn, table.name, columns, _converting(conn.dialect, table, columns, rows))
    else:
        await _sqlite_parts(conn, table, columns, rows)


async def upsert(
    session: AsyncSession,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Row],
    *,
    key: Sequence[str],
    rewrite: Sequence[str],
) -> None:
    """Insert every row; a row whose ``key`` columns exist already gets its ``rewrite``
    columns from the new one (``ON CONFLICT (key) DO UPDATE``)."""
    if not rows:
        return
    conn = await session.connection()
    values = _converted(conn.dialect, table, columns, rows)
    names = ", ".join(columns)
    conflict = f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET " + ", ".join(
        f"{c} = excluded.{c}" for c in rewrite
    )
    if _copies(conn, values):
        staged = await _staged(conn, table, columns, values)
        await conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {staged}{conflict}"
        )
        return
    await conn.exec_driver_sql(_insert_sql(conn, table.name, columns) + conflict, values)


async def update(
    session: AsyncSession,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Row],
    *,
    key: Sequence[str],
    bump: str | None = None,
) -> None:
    """``UPDATE table SET <the other columns> WHERE <key columns> = …`` for every row; the
    ``key`` columns come first in ``columns``. ``bump``: a column each row's update adds one to
    (``scanner_rev``)."""
    if not rows:
        return
    if tuple(columns[: len(key)]) != tuple(key):
        raise ValueError(f"the key columns {key} must come first, not {columns[: len(key)]}")
    conn = await session.connection()
    values = _converted(conn.dialect, table, columns, rows)
    rest = columns[len(key) :]
    if _copies(conn, values):
        staged = await _staged(conn, table, columns, values)
        sets = ", ".join([f"{c} = s.{c}" for c in rest] + ([f"{bump} = t.{bump} + 1"] * bool(bump)))
        match = " AND ".join(f"t.{c} = s.{c}" for c in key)
        await conn.exec_driver_sql(
            f"UPDATE {table.name} AS t SET {sets} FROM {staged} AS s WHERE {match}"
        )
        return
    await conn.exec_driver_sql(*_update_rows(conn, table.name, columns, values, key, bump))


def _update_rows(
    conn: AsyncConnection,
    name: str,
    columns: Sequence[str],
    values: Sequence[Row],
    key: Sequence[str],
    bump: str | None,
) -> tuple[str, list[Row]]:
    """One ``UPDATE … WHERE key`` statement run for each row, and its rows' parameters."""
    marks = dict(zip(columns, _marks(conn, len(columns)), strict=True))
    rest = columns[len(key) :]
    sets = [f"{c} = {marks[c]}" for c in rest] + [f"{bump} = {bump} + 1"] * bool(bump)
    match = " AND ".join(f"{c} = {marks[c]}" for c in key)
    sql = f"UPDATE {name} SET {', '.join(sets)} WHERE {match}"
    if conn.dialect.name == "postgresql":  # numbered marks: the rows stay in column order
        return sql, list(values)
    return sql, [(*row[len(key) :], *row[: len(key)]) for row in values]


#: PostgreSQL: at most this many rows go as one prepared statement run for each (asyncpg's
#: executemany, one round trip); more through COPY, which costs three more round trips and a
#: temporary table but little per row.
FEW_ROWS = 50


def _copies(conn: AsyncConnection, values: Sequence[Row] | Made) -> bool:
    return conn.dialect.name == "postgresql" and len(values) > FEW_ROWS


def _marks(conn: AsyncConnection, count: int) -> list[str]:
    """The driver's placeholders: ``$1``, ``$2``… on PostgreSQL (asyncpg), ``?`` on SQLite."""
    if conn.dialect.name == "postgresql":
        return [f"${n}" for n in range(1, count + 1)]
    return ["?"] * count


def _insert_sql(conn: AsyncConnection, name: str, columns: Sequence[str]) -> str:
    marks = ", ".join(_marks(conn, len(columns)))
    return f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({marks})"


#: Rows a ``COPY`` of :class:`Made` rows makes and converts at a time (about the half
#: megabyte asyncpg sends at a time, for a ``transactions`` row).
PART = 2_000


def _converting(
    dialect: Dialect, table: Table, columns: Sequence[str], rows: Iterable[Row]
) -> Iterator[Row]:
    """:func:`_converted`, a :data:`PART` of the rows at a time, as they are read."""
    procs = _processors(dialect, table, columns)
    made = iter(rows)
    while part := list(islice(made, PART)):
        yield from _converted_by(procs, part)


def _converted(
    dialect: Dialect, table: Table, columns: Sequence[str], rows: Sequence[Row]
) -> list[Row]:
    """Each value through its column's bind conversion, column by column; a value identical to
    the one before it in its column (a batch's one timestamp, a payment's id) converted once."""
    return _converted_by(_processors(dialect, table, columns), rows)


def _converted_by(procs: Sequence[Processor], rows: Sequence[Row]) -> list[Row]:
    out: list[Sequence[Any]] = []
    for (proc, whole), values in zip(procs, zip(*rows, strict=True), strict=True):
        if proc is None:
            out.append(values)
            continue
        done = None if whole is None else whole(values)
        out.append(_mapped(proc, values) if done is None else done)
    return list(zip(*out, strict=True))


def _mapped(proc: Callable[[Any], Any], values: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    last_in: object = _NONE
    last_out: Any = None
    for value in values:
        if value is not last_in:
            last_in, last_out = value, None if value is None else proc(value)
        out.append(last_out)
    return out


_NONE = object()


def _processors(dialect: Dialect, table: Table, columns: Sequence[str]) -> list[Processor]:
    types = [table.c[name].type for name in columns]
    return [(bulk_binder(kind, dialect), bulk_column(kind, dialect)) for kind in types]


async def _staged(
    conn: AsyncConnection, table: Table, columns: Sequence[str], values: Sequence[Row]
) -> str:
    """A temporary table of ``table``'s ``columns`` (their types, no constraints) holding
    ``values`` (PostgreSQL); its name. Dropped at commit, and first if this transaction made
    one already (a dry run's one transaction)."""
    name = f"bulk_{table.name}"
    names = ", ".join(columns)
    await conn.exec_driver_sql(f"DROP TABLE IF EXISTS pg_temp.{name}")
    await conn.exec_driver_sql(
        f"CREATE TEMP TABLE {name} ON COMMIT DROP AS SELECT {names} FROM {table.name} WITH NO DATA"
    )
    await _copy(conn, name, columns, values)
    return name


async def _copy(
    conn: AsyncConnection, name: str, columns: Sequence[str], values: Iterable[Row]
) -> None:
    """``COPY name (columns) FROM STDIN`` on the session's own connection, in its transaction
    (SQLAlchemy begins that on the first statement: one has always run before)."""
    raw = await conn.get_raw_connection()
    adapted: Any = raw.dbapi_connection
    if getattr(adapted, "_transaction", None) is None:
        await conn.execute(text("SELECT 1"))
    await adapted.driver_connection.copy_records_to_table(
        name, records=values, columns=list(columns)
    )


async def _sqlite_parts(
    conn: AsyncConnection, table: Table, columns: Sequence[str], rows: Iterable[Row]
) -> None:
    """:func:`stream` on SQLite: each :data:`PART` of the rows, once made and converted, is
    handed to the database's thread as one ``INSERT … SELECT … FROM json_each(?)`` of the part
    as one JSON text (:func:`_json_insert_sql`), and the next part is made while it runs.

    One statement, not ``executemany``: that releases the interpreter's lock around each row
    and takes it back after, and while the event loop runs Python (the next part being made)
    each taking waits for the loop to hand it over, a few milliseconds a row. One statement
    takes it twice a part. A part that JSON cannot carry exactly as binding would store it
    (:func:`_as_json`) is inserted row by row, once the part before it is in."""
    procs = _processors(conn.dialect, table, columns)
    sql = _json_insert_sql(table.name, columns)
    raw = await conn.get_raw_connection()
    adapted: Any = raw.dbapi_connection
    driver = adapted.driver_connection  # aiosqlite's, in this session's transaction
    error: type[Exception] = conn.dialect.loaded_dbapi.Error
    made = iter(rows)
    pending: asyncio.Future[None] | None = None
    try:
        while part := list(islice(made, PART)):
            values = _converted_by(procs, part)
            payload = _as_json(values)
            if pending is not None:
                await _stored(pending, sql, error, conn.dialect)
                pending = None
            if payload is None:
                await conn.exec_driver_sql(_insert_sql(conn, table.name, columns), values)
                continue
            pending = asyncio.ensure_future(_execute(driver, sql, payload))
            await asyncio.sleep(0)  # the part reaches the database's thread before more is made
        if pending is not None:
            await _stored(pending, sql, error, conn.dialect)
            pending = None
    finally:
        if pending is not None:  # the maker failed: its error is the one raised
            with suppress(Exception):
                await pending


async def _execute(driver: Any, sql: str, payload: str) -> None:
    async with driver.execute(sql, (payload,)):
        pass


async def _stored(
    pending: asyncio.Future[None], sql: str, error: type[Exception], dialect: Dialect
) -> None:
    """A part's statement, awaited; the driver's error as SQLAlchemy would have raised it (its
    parameter, the part's JSON, left out)."""
    try:
        await pending
    except error as exc:
        raise DBAPIError.instance(
            sql, None, exc, error, hide_parameters=True, dialect=dialect
        ) from exc


def _json_insert_sql(name: str, columns: Sequence[str]) -> str:
    """``INSERT`` of the rows of a JSON array of arrays (the parameter), in the array's order."""
    values = ", ".join(f"json_extract(value, '$[{n}]')" for n in range(len(columns)))
    return (
        f"INSERT INTO {name} ({', '.join(columns)}) SELECT {values} FROM json_each(?) ORDER BY key"
    )


_INT64: Final = range(-(2**63), 2**63)
_JSON_EXACT: Final = frozenset({str, int, type(None)})


def _as_json(rows: Sequence[Row]) -> str | None:
    """The converted rows as one JSON text, when JSON carries each value as binding it would
    store it: text without a NUL, a 64-bit integer, NULL. Else None (a real, a blob, a bool,
    a larger integer: binding stores or refuses them otherwise)."""
    for column in zip(*rows, strict=True):
        kinds = set(map(type, column))
        if not kinds <= _JSON_EXACT:
            return None
        if int in kinds and not all(v in _INT64 for v in column if type(v) is int):
            return None
        if str in kinds and "\x00" in "".join(v for v in column if type(v) is str):
            return None
    try:
        return orjson.dumps(rows).decode()
    except orjson.JSONEncodeError:  # a lone surrogate: binding refuses it, and says why
        return None
