"""The engine: URL derivation, pool options, SQLite pragmas and BEGIN IMMEDIATE."""

from __future__ import annotations

import sqlite3
import traceback
from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.config import Settings
from scanner.db.engine import async_url, engine_for_url
from scanner.errors import ConfigError


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("postgresql://app:pw@db:5432/pay", "postgresql+asyncpg://app:pw@db:5432/pay"),
        ("postgres://app@db/pay", "postgresql+asyncpg://app@db/pay"),
        ("postgresql+asyncpg://app@db/pay", "postgresql+asyncpg://app@db/pay"),
        ("sqlite:///./scanner.db", "sqlite+aiosqlite:///./scanner.db"),
        (
            "sqlite:////var/lib/scanner/scanner.db",
            "sqlite+aiosqlite:////var/lib/scanner/scanner.db",
        ),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_async_url_is_derived_from_the_configured_one(configured: str, expected: str) -> None:
    assert async_url(configured).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "mysql://app:s3cret-pw@db/pay",
        "oracle+cx_oracle://app:s3cret-pw@db",
        "postgresql://app:s3cret-pw@db:notaport/pay",
        "not a url at all s3cret-pw",
        "",
    ],
)
def test_a_bad_url_is_a_config_error_without_the_password(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        engine_for_url(bad)
    assert caught.value.key == "DATABASE_URL"
    shown = "".join(traceback.format_exception(caught.value))
    assert "s3cret-pw" not in shown
    assert "DATABASE_URL" in str(caught.value)


async def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(
    engine: AsyncEngine, db_backend: str
) -> None:
    async with engine.connect() as conn:
        if db_backend == "sqlite":
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 30000
        else:
            name = (await conn.execute(text("SHOW application_name"))).scalar()
            assert name == "ctrip-scanner"
    if db_backend == "postgresql":
        pool = engine.pool
        assert pool.size() == 10  # type: ignore[attr-defined]
        assert engine.sync_engine.pool._pre_ping


async def test_pool_options_come_from_settings(
    settings_for: Callable[..., Settings], db_url: str
) -> None:
    settings = settings_for(db_url)
    options = settings.database.model_copy(update={"pool_size": 3, "pool_timeout": 2.5})
    engine = engine_for_url(db_url, options)
    try:
        async with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 2500
            else:
                assert engine.pool.size() == 3  # type: ignore[attr-defined]
                assert engine.pool.timeout() == 2.5  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_sqlite_transactions_take_the_write_lock_when_they_begin(
    session_factory: async_sessionmaker[AsyncSession], db_url: str
) -> None:
    path = db_url.removeprefix("sqlite:///")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        async with session_factory() as session:
            await session.execute(text("SELECT count(*) FROM payments"))  # a read only
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # free again once the session has ended
        other.execute("ROLLBACK")
    finally:
        other.close()


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_sqlite_foreign_keys_are_enforced(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory() as session:
        with pytest.raises(Exception, match="FOREIGN KEY"):
            await session.execute(
                text(
                    "INSERT INTO payments (id, token_id, chain, address, amount, expires_at) "
                    "VALUES ('00000000-0000-4000-8000-000000000001', "
                    "'00000000-0000-4000-8000-0000000000ff', 'ethereum', '0xab', '1', "
                    "'2030-01-01 00:00:00.000000')"
                )
            )
