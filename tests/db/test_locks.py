"""Advisory locks: a chain's transactions, serialized event inserts; no-ops on SQLite."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.db.locks import (
    EVENTS_LOCK_KEY,
    chain_xact_key,
    chain_xact_lock,
    events_xact_lock,
    lock_key,
)
from tests.conftest import BACKENDS


def test_keys_are_stable_signed_64_bit_integers() -> None:
    assert lock_key("a") == lock_key("a") != lock_key("b")
    keys = [chain_xact_key(name) for name in ("ethereum", "polygon", "bsc")] + [EVENTS_LOCK_KEY]
    assert len(set(keys)) == len(keys)
    assert all(-(2**63) <= key < 2**63 for key in keys)
    assert lock_key("ctrip-scanner:chain-xact:ethereum") == chain_xact_key("ethereum")


async def _xact_lock_is_free(engine: AsyncEngine, key: int) -> bool:
    async with engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            return True
        free = await conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key})
        return bool(free.scalar())


async def test_transaction_locks_last_until_commit(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    held = db_backend == "postgresql"
    async with session_factory() as session:
        await chain_xact_lock(session, "ethereum")
        await events_xact_lock(session)
        assert await _xact_lock_is_free(engine, chain_xact_key("ethereum")) is not held
        assert await _xact_lock_is_free(engine, EVENTS_LOCK_KEY) is not held
        await session.commit()
    assert await _xact_lock_is_free(engine, chain_xact_key("ethereum"))
    assert await _xact_lock_is_free(engine, EVENTS_LOCK_KEY)


async def _write(session: AsyncSession, number: int) -> None:
    await session.execute(
        text(
            "INSERT INTO blocks (chain, number, hash, parent_hash, timestamp) "
            f"VALUES ('ethereum', {number}, '0x1', '0x0', '2026-01-01 00:00:00.000000')"
        )
    )


async def test_event_writers_queue_behind_each_other(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """PostgreSQL: by the events lock. SQLite: by BEGIN IMMEDIATE, the lock being a no-op."""
    order: list[str] = []
    first_locked = asyncio.Event()

    async def first() -> None:
        async with session_factory() as session:
            await events_xact_lock(session)
            await _write(session, 1)
            first_locked.set()
            await asyncio.sleep(0.2)
            order.append("first commits")
            await session.commit()

    async def second() -> None:
        await first_locked.wait()
        async with session_factory() as session:
            await events_xact_lock(session)
            await _write(session, 2)
            order.append("second locked")
            await session.commit()

    await asyncio.gather(first(), second())
    assert order == ["first commits", "second locked"]


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
@pytest.mark.skipif("postgresql" not in BACKENDS, reason="advisory locks are PostgreSQL's")
async def test_a_chain_transaction_frozen_right_after_its_lock_is_ended_by_the_server(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    """The idle limit is set before the lock is taken: a process frozen the moment it holds the
    lock (before any other statement) still lets the chain go once the limit has passed, while
    a transaction without the limit keeps it."""
    key = chain_xact_key("ethereum")
    async with session_factory() as kept:
        await chain_xact_lock(kept, "ethereum")
        async with session_factory() as frozen:
            await chain_xact_lock(frozen, "polygon", idle_seconds=1.0)
            await asyncio.sleep(2.5)  # neither sends anything: both idle in their transactions
            assert await _xact_lock_is_free(engine, chain_xact_key("polygon"))
            with pytest.raises(DBAPIError, match="connection is closed"):
                await frozen.execute(text("SELECT 1"))  # the server ended it and its connection
        assert not await _xact_lock_is_free(engine, key)
        await kept.rollback()
    assert await _xact_lock_is_free(engine, key)
