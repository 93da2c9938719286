"""A dry run's scratch copy: the chain's rows in temporary tables that shadow the real ones.

``scanner backfill --dry-run`` runs the real pipeline, so each range sees what the ranges
before it would have written and its report is what a real run would do. It writes into
temporary tables of its own connection, named like the real ones and holding a copy of the
chain's rows taken when the run begins: every unqualified statement of the run resolves to
them (PostgreSQL searches ``pg_temp`` first, and the path is set again so that statements
this connection prepared earlier are planned anew; SQLite searches ``temp`` first). The real
tables are only read, so the run takes no row lock, no chain or events lock (PostgreSQL), and
no write lock (SQLite: its transaction begins deferred). The copies go with the rollback that
ends the run.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.db.engine import DEFERRED_BEGIN
from scanner.db.sql import is_postgres

#: The tables a range writes, with the rows of the chain each copy holds (``:chain``).
_COPIED = {
    "tokens": "TRUE",
    "payments": "chain = :chain",
    "payment_sums": "payment_id IN (SELECT id FROM {schema}.payments WHERE chain = :chain)",
    "transactions": "chain = :chain",
    "payment_events": "FALSE",  # the run's own events only
}


async def begin(session: AsyncSession, chain: str) -> None:
    """Open the session's transaction and shadow the written tables with copies of ``chain``'s
    rows; every later statement of the session writes into the copies."""
    await session.connection(execution_options={DEFERRED_BEGIN: True})
    if is_postgres(session):
        await _postgres(session, chain)
    else:
        await _sqlite(session, chain)


async def _postgres(session: AsyncSession, chain: str) -> None:
    schema = _quoted(str((await session.execute(text("SELECT current_schema()"))).scalar()))
    for name, rows in _COPIED.items():
        await session.execute(
            text(f"CREATE TEMP TABLE {name} (LIKE {schema}.{name} INCLUDING ALL) ON COMMIT DROP")
        )
        where = rows.format(schema=schema)
        await session.execute(
            text(f"INSERT INTO pg_temp.{name} SELECT * FROM {schema}.{name} WHERE {where}"),
            {"chain": chain} if ":chain" in where else {},
        )
    # A changed search_path makes PostgreSQL plan every prepared statement anew: one prepared
    # before the copies existed would still name the real table.
    path = "'pg_temp, ' || current_setting('search_path')"
    await session.execute(text(f"SELECT set_config('search_path', {path}, true)"))


async def _sqlite(session: AsyncSession, chain: str) -> None:
    names = ", ".join(f"'{name}'" for name in _COPIED)
    rows = await session.execute(
        text(
            "SELECT type, sql FROM main.sqlite_master WHERE tbl_name IN "
            f"({names}) AND type IN ('table', 'index') AND sql IS NOT NULL ORDER BY type DESC"
        )
    )
    conn = await session.connection()
    for kind, sql in rows.all():  # tables first, then their indexes; as stored, no bind syntax
        await conn.exec_driver_sql(_temporary(kind, sql))
    for name, rows_of in _COPIED.items():
        where = rows_of.format(schema="main")
        await session.execute(
            text(f"INSERT INTO temp.{name} SELECT * FROM main.{name} WHERE {where}"),
            {"chain": chain} if ":chain" in where else {},
        )


_TABLE = re.compile(r"^\s*CREATE\s+TABLE\s+", re.IGNORECASE)
_INDEX = re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(IF\s+NOT\s+EXISTS\s+)?", re.IGNORECASE)


def _temporary(kind: str, sql: str) -> str:
    """A stored ``CREATE TABLE`` / ``CREATE INDEX`` of the main schema, made temporary."""
    if kind == "table":
        return _TABLE.sub("CREATE TEMP TABLE ", sql, count=1)
    return _INDEX.sub(lambda m: f"CREATE {m.group(1) or ''}INDEX temp.", sql, count=1)


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
