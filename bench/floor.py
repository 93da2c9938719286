"""The database's own floor: given rows written with nothing of the scanner around them.

A credited transfer is a ``transactions`` row and at least one ``payment_events`` row, and
every commit rewrites the payments it moved: the rows the gateway's interface requires. This
module writes such rows into a fresh migrated database as fast as the database alone takes
them, and times each part:

- PostgreSQL: one ``COPY`` (binary, asyncpg) of every transaction row, one of every event row,
  then per range the payments' new values through a temporary table (``COPY``) and one
  ``UPDATE … FROM``, a transaction each, as the scanner's own bulk update does.
- SQLite: one transaction; one ``executemany`` of the transaction rows, one of the event rows,
  and per range one ``executemany`` of ``UPDATE payments … WHERE id = ?``.

:func:`copy_of` reads the rows a backfill wrote out of its database (the floor of exactly those
rows, in ``bench.backfill --deposit``); ``bench.write_floor`` makes synthetic ones.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench.database import BenchDB, fresh_database

Row = Sequence[Any]


@dataclass
class FloorRows:
    """What a floor writes: the rows of two tables and, per range, the payments' updates
    (``update_columns`` start with ``id``; each update also adds one to ``scanner_rev``)."""

    tx_columns: Sequence[str]
    transactions: Sequence[Row]
    event_columns: Sequence[str]
    events: Sequence[Row]
    update_columns: Sequence[str]
    ranges: Sequence[Sequence[Row]]

    @property
    def payment_updates(self) -> int:
        return sum(len(r) for r in self.ranges)


@dataclass
class Floor:
    backend: str
    seconds: dict[str, float] = field(default_factory=dict)  # label -> seconds, in order
    counts: dict[str, int] = field(default_factory=dict)  # rows found written afterwards

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


# --------------------------------------------------------------------------- writing


async def pg_write(conn: asyncpg.Connection, rows: FloorRows) -> Floor:
    """The floor on PostgreSQL (the payments, tokens the rows point at already there)."""
    floor = Floor("postgresql")
    started = time.perf_counter()
    await conn.copy_records_to_table(
        "transactions", records=rows.transactions, columns=list(rows.tx_columns)
    )
    floor.seconds[f"COPY {len(rows.transactions):,} transactions rows"] = _since(started)
    started = time.perf_counter()
    await conn.copy_records_to_table(
        "payment_events", records=rows.events, columns=list(rows.event_columns)
    )
    floor.seconds[f"COPY {len(rows.events):,} payment_events rows"] = _since(started)
    rest = rows.update_columns[1:]
    sets = ", ".join([f"{c} = s.{c}" for c in rest] + ["scanner_rev = t.scanner_rev + 1"])
    names = ", ".join(rows.update_columns)
    started = time.perf_counter()
    for updates in rows.ranges:
        async with conn.transaction():
            await conn.execute(
                f"CREATE TEMP TABLE s ON COMMIT DROP AS SELECT {names} FROM payments WITH NO DATA"
            )
            await conn.copy_records_to_table(
                "s", records=updates, columns=list(rows.update_columns)
            )
            await conn.execute(f"UPDATE payments AS t SET {sets} FROM s WHERE t.id = s.id")
    floor.seconds[_updates_label(rows)] = _since(started)
    for name, sql in _COUNTS.items():
        floor.counts[name] = int(await conn.fetchval(sql))
    return floor


def sqlite_write(path: Path, rows: FloorRows) -> Floor:
    """The floor on SQLite: one transaction of ``executemany``s, as the scanner's connection
    is set up (WAL, ``synchronous = NORMAL``)."""
    floor = Floor("sqlite")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        begun = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_insert_sql("transactions", rows.tx_columns), rows.transactions)
        floor.seconds[f"INSERT {len(rows.transactions):,} transactions rows"] = _since(begun)
        started = time.perf_counter()
        conn.executemany(_insert_sql("payment_events", rows.event_columns), rows.events)
        floor.seconds[f"INSERT {len(rows.events):,} payment_events rows"] = _since(started)
        sets = ", ".join([f"{c} = ?" for c in rows.update_columns[1:]])
        sql = f"UPDATE payments SET {sets}, scanner_rev = scanner_rev + 1 WHERE id = ?"
        started = time.perf_counter()
        for updates in rows.ranges:
            conn.executemany(sql, [(*u[1:], u[0]) for u in updates])
        conn.execute("COMMIT")
        floor.seconds[_updates_label(rows) + " + COMMIT"] = _since(started)
        for name, query in _COUNTS.items():
            floor.counts[name] = int(conn.execute(query).fetchone()[0])
    finally:
        conn.close()
    return floor


_COUNTS = {
    "transactions": "SELECT count(*) FROM transactions",
    "events": "SELECT count(*) FROM payment_events",
    "payment_updates": "SELECT coalesce(sum(scanner_rev), 0) FROM payments",
}


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _updates_label(rows: FloorRows) -> str:
    return f"UPDATE {rows.payment_updates:,} payments in {len(rows.ranges)} ranges"


def _since(started: float) -> float:
    return time.perf_counter() - started


def print_floor(floor: Floor, credits: int) -> None:
    for label, seconds in floor.seconds.items():
        print(f"  {label:48s} {seconds:6.2f} s")
    total = floor.total
    print(f"  {'total':48s} {total:6.2f} s  -> at most {credits / total:,.0f} credited/s")


def pg_dsn(db: BenchDB) -> str:
    return db.url.replace("postgresql+asyncpg://", "postgresql://")


def sqlite_path(db: BenchDB) -> Path:
    return Path(db.url.removeprefix("sqlite:///"))


# --------------------------------------------------------------------------- a backfill's rows


#: Copied untimed into the floor's database first: what the timed rows point at.
_SETUP_TABLES = ("tokens", "payments")


async def floor_of(source: BenchDB, work: Path, pg_admin_url: str) -> tuple[Floor, dict[str, int]]:
    """The floor of exactly the rows the backfill wrote into ``source``: its ``transactions``
    and ``payment_events`` rows (every column but the events' ids, which the database numbers)
    and, per range, its payments' updates (a payment the backfill updated ``n`` times, its
    ``scanner_rev``, is updated in the first ``n`` ranges, with its final values), written into
    a fresh database of the same kind. Returns the floor and the backfill's own counts, to
    compare with what the floor wrote."""
    target = await fresh_database(source.backend, work, pg_admin_url)
    try:
        if source.backend == "postgresql":
            src = await asyncpg.connect(pg_dsn(source))
            dst = await asyncpg.connect(pg_dsn(target))
            try:
                rows, expected = await _pg_rows(src, dst)
                return await pg_write(dst, rows), expected
            finally:
                await src.close()
                await dst.close()
        rows, expected = _sqlite_rows(sqlite_path(source), sqlite_path(target))
        return sqlite_write(sqlite_path(target), rows), expected
    finally:
        await target.close()


_UPDATE_COLUMNS = (
    "id", "status", "amount_received", "confirmations", "detected_in_block", "updated_at",
)  # fmt: skip


def _floor_rows(
    tx: list[Row],
    tx_columns: Sequence[str],
    events: list[Row],
    event_columns: Sequence[str],
    payments: list[Row],
) -> tuple[FloorRows, dict[str, int]]:
    """``payments``: (scanner_rev, *_UPDATE_COLUMNS) of every payment."""
    ranges = max((p[0] for p in payments), default=0)
    updates = [[p[1:] for p in payments if p[0] > n] for n in range(ranges)]
    rows = FloorRows(tx_columns, tx, event_columns, events, _UPDATE_COLUMNS, updates)
    expected = {
        "transactions": len(tx),
        "events": len(events),
        "payment_updates": sum(p[0] for p in payments),
    }
    return rows, expected


async def _pg_rows(
    src: asyncpg.Connection, dst: asyncpg.Connection
) -> tuple[FloorRows, dict[str, int]]:
    for table in _SETUP_TABLES:
        columns = await _pg_columns(src, table)
        records = await src.fetch(f"SELECT {', '.join(columns)} FROM {table}")
        if table == "payments":  # as the gateway left them: not yet updated by the scanner
            at = columns.index("scanner_rev")
            records = [(*r[:at], 0, *r[at + 1 :]) for r in records]
        await dst.copy_records_to_table(table, records=records, columns=columns)
    await dst.execute("ANALYZE")
    tx_columns = await _pg_columns(src, "transactions")
    event_columns = [c for c in await _pg_columns(src, "payment_events") if c != "id"]
    tx = await src.fetch(f"SELECT {', '.join(tx_columns)} FROM transactions ORDER BY created_at")
    events = await src.fetch(f"SELECT {', '.join(event_columns)} FROM payment_events ORDER BY id")
    payments = await src.fetch(f"SELECT scanner_rev, {', '.join(_UPDATE_COLUMNS)} FROM payments")
    return _floor_rows(
        [tuple(r) for r in tx],
        tx_columns,
        [tuple(r) for r in events],
        event_columns,
        [tuple(r) for r in payments],
    )


async def _pg_columns(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        table,
    )
    return [r[0] for r in rows]


def _sqlite_rows(source: Path, target: Path) -> tuple[FloorRows, dict[str, int]]:
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        dst.execute("BEGIN")
        for table in _SETUP_TABLES:
            columns = _sqlite_columns(src, table)
            records = src.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            if table == "payments":
                at = columns.index("scanner_rev")
                records = [(*r[:at], 0, *r[at + 1 :]) for r in records]
            dst.executemany(_insert_sql(table, columns), records)
        dst.execute("COMMIT")
        tx_columns = _sqlite_columns(src, "transactions")
        event_columns = [c for c in _sqlite_columns(src, "payment_events") if c != "id"]
        tx = src.execute(
            f"SELECT {', '.join(tx_columns)} FROM transactions ORDER BY created_at"
        ).fetchall()
        events = src.execute(
            f"SELECT {', '.join(event_columns)} FROM payment_events ORDER BY id"
        ).fetchall()
        payments = src.execute(
            f"SELECT scanner_rev, {', '.join(_UPDATE_COLUMNS)} FROM payments"
        ).fetchall()
    finally:
        src.close()
        dst.close()
    return _floor_rows(tx, tx_columns, events, event_columns, payments)


def _sqlite_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
