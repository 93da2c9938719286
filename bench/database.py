"""The benchmarks' databases and the gateway's payments in them.

:func:`fresh_database` makes a new migrated database (SQLite file copied from a template migrated
once per process, or a PostgreSQL database created for the run and dropped after);
:func:`insert_payments` writes the gateway's payments in ONE executemany, as plain SQL.

Payments: a chosen fraction of the recipients are "watched" (spread evenly over the recipient
list); each Transfer log to a watched recipient has a payment of its own, for exactly the
transferred amount. So ``--match 0.01`` makes 1% of the logs pay a payment and ``--match 1.0``
makes every log pay one. Payments are created at the timestamp of the block before the scanned
range, expire 30 days later, and are marked as already seen by the scanner (``seen_at_block``),
so the scan does not spend its time on the one-time look-back for payments written behind the
cursor (that path is not what these benchmarks measure). Their ``created_at`` are a millisecond
apart (100,000 payments span 100 s, within the default 300 s grace), so every transfer, even in
the first block, finds its payment created in time.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bench.chain import CHAIN, SYMBOL, BenchChain, recipient_addresses
from scanner.config import Settings
from scanner.core.amounts import to_amount
from scanner.db import migrate
from scanner.db.engine import make_engine, make_session_factory
from scanner.testkit.gateway import NewPayment, db_id, db_time
from scanner.testkit.gateway import insert_payments as gateway_insert
from scanner.testkit.postgres import PG_ADMIN_URL, pg_execute, pg_url
from scanner.testkit.settings import settings_from

PAYMENT_LIFETIME_S = 30 * 24 * 3600
BOOK_CREATED_BEFORE_S = 24 * 3600
BOOK_LIFETIME_S = 365 * 24 * 3600
CREATED_STEP_S = 0.001  # 100,000 payments span 100 s: within the scanner's default 300 s grace


def watched_recipients(count: int, fraction: float) -> list[bool]:
    """Which recipients have payments: ``round(count * fraction)`` of them, spread evenly."""
    fraction = min(max(fraction, 0.0), 1.0)
    return [int((i + 1) * fraction) > int(i * fraction) for i in range(count)]


def payment_plan(
    chain: BenchChain, fraction: float, deposit: bool = False
) -> list[tuple[str, int]]:
    """The payments, as (address, amount in base units) in log order: one per bulk log that
    goes to a watched recipient, for exactly its amount; or with ``deposit`` (an exchange's
    deposit addresses) one long-lived payment per watched recipient, for the sum of every log
    it receives, so it takes them all and stays open until the last."""
    shape = chain.shape
    watched = watched_recipients(shape.recipients, fraction)
    addresses = recipient_addresses(shape.recipients)
    logs = [r for r in map(chain.recipient_of_log, range(shape.logs)) if watched[r]]
    if not deposit:
        return [(addresses[r], shape.amount) for r in logs]
    received = Counter(logs)
    return [(addresses[r], shape.amount * received[r]) for r in dict.fromkeys(logs)]


async def insert_token(db: BenchDB, chain: BenchChain) -> Any:
    """The token row, as the scanner would insert it at start (its values agree with config)."""
    return await insert_token_row(db, chain.token, chain.shape.decimals)


async def insert_token_row(db: BenchDB, address: str, decimals: int, chain: str = CHAIN) -> Any:
    """An enabled ``tokens`` row for ``address`` on the bench chain (or ``chain``); its id."""
    token_id = uuid.uuid4()
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO tokens (id, chain, address, symbol, decimals, enabled)"
                " VALUES (:id, :chain, :address, :symbol, :decimals, :enabled)"
            ),
            {
                "id": db_id(db.engine, token_id),
                "chain": chain,
                "address": address,
                "symbol": SYMBOL,
                "decimals": decimals,
                "enabled": True,
            },
        )
    return token_id


async def insert_payments(
    db: BenchDB,
    chain: BenchChain,
    fraction: float,
    *,
    created_at: float,
    seen_at_block: int,
    deposit: bool = False,
    book: int = 0,
) -> int:
    """Write the payments of :func:`payment_plan` in one executemany, and a book of ``book``
    other open payments beside them (:func:`insert_book`: created a day before ``created_at``,
    expiring a year after it, already seen); returns how many payments the plan has."""
    token_id = await insert_token(db, chain)
    decimals = chain.shape.decimals
    expires = created_at + PAYMENT_LIFETIME_S
    rows = [
        # created a millisecond apart, in log order (as a gateway creating them one by one would)
        NewPayment(
            uuid.uuid4(),
            token_id,
            CHAIN,
            address,
            str(to_amount(amount, decimals)),
            expires,
            created_at + n * CREATED_STEP_S,
            seen_at_block,
        )
        for n, (address, amount) in enumerate(payment_plan(chain, fraction, deposit))
    ]
    async with db.engine.begin() as conn:
        await gateway_insert(conn, rows)
    if book:
        await insert_book(
            db,
            token_id,
            book,
            created=created_at - BOOK_CREATED_BEFORE_S,
            expires=created_at + BOOK_LIFETIME_S,
            seen_at_block=seen_at_block,
        )
    return len(rows)


async def insert_book(
    db: BenchDB,
    token_id: Any,
    count: int,
    *,
    created: float,
    expires: float,
    seen_at_block: int | None,
) -> None:
    """``count`` other open payments of 10 tokens each, unpaid, at addresses no transfer pays
    (``0xee…``), in one ``INSERT … SELECT`` (ids and addresses generated by the database), as a
    gateway writes them: nobody runs ANALYZE (SQLite never gathers statistics by itself; on
    PostgreSQL autovacuum does, when it comes by). ``seen_at_block`` None: not yet looked at by
    the scanner."""
    params = {
        "token": db_id(db.engine, token_id),
        "chain": CHAIN,
        "created": db_time(db.engine, created),
        "expires": db_time(db.engine, expires),
        "n": count,
        "seen": seen_at_block,
    }
    if db.backend == "postgresql":
        sql = (
            "INSERT INTO payments (id, token_id, chain, address, amount, expires_at, created_at,"
            " seen_at_block) SELECT gen_random_uuid(), :token, :chain,"
            " '0xee' || lpad(to_hex(i), 38, '0'), '10', :expires, :created,"
            " CAST(:seen AS bigint) FROM generate_series(1, :n) AS i"
        )
    else:
        uuid_sql = (
            "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||"
            " substr(hex(randomblob(2)), 2) || '-a' || substr(hex(randomblob(2)), 2) || '-' ||"
            " hex(randomblob(6)))"
        )
        sql = (
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n)"
            " INSERT INTO payments (id, token_id, chain, address, amount, expires_at, created_at,"
            f" seen_at_block) SELECT {uuid_sql}, :token, :chain, printf('0xee%038x', i), '10',"
            " :expires, :created, :seen FROM s"
        )
    async with db.engine.begin() as conn:
        await conn.execute(text(sql), params)


# --------------------------------------------------------------------------- databases


@dataclass
class BenchDB:
    backend: str
    url: str
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    _drop: str | None = None
    _admin: str | None = None

    async def counts(self) -> dict[str, int]:
        """Rows the scan wrote, for a sanity line under the table."""
        queries = {
            "transactions": "SELECT count(*) FROM transactions",
            "events": "SELECT count(*) FROM payment_events",
            "confirmed": "SELECT count(*) FROM payments WHERE status = 'confirmed'",
            "confirming": "SELECT count(*) FROM payments WHERE status = 'confirming'",
        }
        out: dict[str, int] = {}
        async with self.engine.connect() as conn:
            for name, sql in queries.items():
                out[name] = int((await conn.execute(text(sql))).scalar_one())
        return out

    async def close(self) -> None:
        await self.engine.dispose()
        if self._drop is not None and self._admin is not None:
            await pg_execute(self._admin, f'DROP DATABASE IF EXISTS "{self._drop}" WITH (FORCE)')


_numbers = itertools.count(1)
_sqlite_template: Path | None = None


async def fresh_database(backend: str, workdir: Path, pg_admin_url: str = PG_ADMIN_URL) -> BenchDB:
    """A new database migrated to head, with the application's engine and sessions."""
    global _sqlite_template
    drop: str | None = None
    if backend == "sqlite":
        if _sqlite_template is None:
            _sqlite_template = workdir / "template.db"
            await asyncio.to_thread(migrate.upgrade, settings_from(f"sqlite:///{_sqlite_template}"))
        path = workdir / f"bench-{next(_numbers)}.db"
        shutil.copyfile(_sqlite_template, path)
        url = f"sqlite:///{path}"
    elif backend == "postgresql":
        drop = f"ctrip_bench_{os.getpid()}_{next(_numbers)}"
        await pg_execute(
            pg_admin_url, f'DROP DATABASE IF EXISTS "{drop}"', f'CREATE DATABASE "{drop}"'
        )
        url = pg_url(drop, pg_admin_url)
        await asyncio.to_thread(migrate.upgrade, settings_from(url))
    else:
        raise ValueError(f"unknown backend {backend!r}")
    settings = settings_from(url)
    engine = make_engine(settings)
    return BenchDB(
        backend,
        url,
        settings,
        engine,
        make_session_factory(engine),
        _drop=drop,
        _admin=pg_admin_url,
    )


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="ctrip-bench-"))
