"""PostgreSQL advisory locks; no-ops on SQLite (one scanning process at a time there).

Keys are derived from names: the first 8 bytes of ``sha256(name)`` as a signed 64-bit integer,
so every process computes the same key without a registry. Advisory locks are per database.

- :func:`chain_xact_lock` and :func:`events_xact_lock` (transaction-level) are released by the
  commit or rollback of the transaction that took them. Which instance scans a chain live is a
  lease in ``chain_leases`` (:mod:`scanner.scan.leases`), checked under this lock; the chain's
  transaction lock keeps a key of its own (``chain-xact``), distinct from the session lock
  earlier versions held per chain.
- :func:`advisory_lock` (session-level, blocking) guards the start-up schema check and upgrade.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

CHAIN_XACT_LOCK_PREFIX = "ctrip-scanner:chain-xact:"
EVENTS_LOCK_NAME = "ctrip-scanner:payment-events"
MIGRATION_LOCK_NAME = "ctrip-scanner:schema-migration"


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def chain_xact_key(chain: str) -> int:
    return lock_key(CHAIN_XACT_LOCK_PREFIX + chain)


EVENTS_LOCK_KEY = lock_key(EVENTS_LOCK_NAME)
MIGRATION_LOCK_KEY = lock_key(MIGRATION_LOCK_NAME)


def _is_postgresql(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


async def _scalar_outside_transaction(conn: AsyncConnection, sql: str, key: int) -> object:
    """Run a session-level lock function without leaving a transaction open behind it."""
    was_in_transaction = conn.in_transaction()
    value = (await conn.execute(text(sql), {"key": key})).scalar()
    if not was_in_transaction:
        await conn.commit()
    return value


async def _xact_lock(session: AsyncSession, key: int) -> None:
    if session.get_bind().dialect.name != "postgresql":
        return
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


#: How long a statement of a chain's transaction waits for a row lock another transaction (the
#: gateway's) holds before it fails: the range is then retried with backoff and the wait reported
#: (``payment_locked``), never waited out in silence.
ROW_LOCK_TIMEOUT_MS = 2000

#: A command's chain transaction (a backfill's commit, a rewind) idle this long, its process
#: frozen inside it (ctrl-Z, SIGSTOP), is ended by the server, so that it holds the chain's lock
#: against the live scan no longer: long enough for the plan of a backfill's largest commit,
#: computed between its statements.
COMMAND_IDLE_SECONDS = 60.0


async def chain_xact_lock(
    session: AsyncSession, chain: str, *, idle_seconds: float | None = None
) -> None:
    """Serialize this transaction with others on the same chain, until it ends; from then on a
    row lock is waited for :data:`ROW_LOCK_TIMEOUT_MS` at most (PostgreSQL).

    ``idle_seconds``: the server ends the transaction once it has waited that long for its
    client, set *before* the lock is taken, so that a process frozen at any point after taking
    it (SIGSTOP, a paused VM) holds it no longer than that."""
    postgresql = session.get_bind().dialect.name == "postgresql"
    if postgresql and idle_seconds is not None:
        idle_ms = int(idle_seconds * 1000)
        await session.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {idle_ms}"))
    await _xact_lock(session, chain_xact_key(chain))
    if postgresql:
        await session.execute(text(f"SET LOCAL lock_timeout = {ROW_LOCK_TIMEOUT_MS}"))


async def events_xact_lock(session: AsyncSession) -> None:
    """Serialize event inserts so event ids become visible in commit order; take it last."""
    await _xact_lock(session, EVENTS_LOCK_KEY)


@asynccontextmanager
async def advisory_lock(conn: AsyncConnection, key: int) -> AsyncIterator[None]:
    """Hold a session-level lock on ``conn`` for the block, waiting for it as long as it takes."""
    if not _is_postgresql(conn):
        yield
        return
    await _scalar_outside_transaction(conn, "SELECT pg_advisory_lock(:key)", key)
    try:
        yield
    finally:
        await _unlock_or_discard(conn, key)


async def _unlock_or_discard(conn: AsyncConnection, key: int) -> None:
    """Release the lock; if the connection cannot, drop it (the server then frees the lock)."""
    try:
        if conn.in_transaction():
            await conn.rollback()
        await _scalar_outside_transaction(conn, "SELECT pg_advisory_unlock(:key)", key)
    except SQLAlchemyError:
        await conn.invalidate()
