"""The start-up schema check: equal, behind (upgrade or refuse), unknown; and the race."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scanner.config import Settings
from scanner.db import migrate
from scanner.db.locks import MIGRATION_LOCK_KEY
from scanner.db.migrate import SchemaStatus, ensure_schema
from scanner.errors import ConfigError, DatabaseError, SchemaBehind, SchemaUnknown
from tests.support.wait import until

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("ensure_schema_child.py")


async def test_equal_goes_on(settings: Settings) -> None:
    head = migrate.head_revision()
    assert await ensure_schema(settings) == SchemaStatus(current=head, head=head, upgraded=False)


async def test_behind_is_upgraded_when_migrate_on_start(
    empty_db_url: str, settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for(empty_db_url, SCANNER_MIGRATE_ON_START="true")
    head = migrate.head_revision()
    assert await ensure_schema(settings) == SchemaStatus(current=None, head=head, upgraded=True)
    assert migrate.current(settings) == head
    assert migrate.schema_diff(settings) == []


async def test_behind_without_migrate_on_start_names_both_revisions_and_the_command(
    settings: Settings, settings_for: Callable[..., Settings], db_url: str
) -> None:
    head = migrate.head_revision()
    migrate.stamp(settings, "base")
    refusing = settings_for(db_url, SCANNER_MIGRATE_ON_START="false")
    with pytest.raises(SchemaBehind) as caught:
        await ensure_schema(refusing)
    message = str(caught.value)
    assert head in message and "<none>" in message and "scanner migrate upgrade" in message
    assert (caught.value.current, caught.value.head, caught.value.exit_code) == (None, head, 3)
    assert migrate.current(settings) is None  # nothing was changed


async def test_behind_a_known_revision_names_it(
    settings_for: Callable[..., Settings], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_head = migrate.head_revision()
    monkeypatch.setattr(migrate, "head_revision", lambda: "0123456789ab")
    monkeypatch.setattr(migrate, "_known", lambda script, rev: True)
    with pytest.raises(SchemaBehind) as caught:
        await ensure_schema(settings_for(db_url, SCANNER_MIGRATE_ON_START="false"))
    assert real_head in str(caught.value) and "0123456789ab" in str(caught.value)


async def test_an_unknown_revision_is_refused_by_name(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:  # as a newer scanner's migration would leave it
        await conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeedbeef'"))
    with pytest.raises(SchemaUnknown) as caught:
        await ensure_schema(settings)  # migrate_on_start does not matter
    assert "f00dfeedbeef" in str(caught.value)
    assert caught.value.current == "f00dfeedbeef" and caught.value.exit_code == 3


async def test_an_unreachable_database_is_a_database_error_without_the_password(
    settings_for: Callable[..., Settings],
) -> None:
    with pytest.raises(DatabaseError) as caught:
        await ensure_schema(settings_for("postgresql://app:s3cret-pw@127.0.0.1:1/pay"))
    assert "s3cret-pw" not in str(caught.value)
    assert "postgresql://app:***@127.0.0.1:1/pay" in str(caught.value)


async def test_an_sqlite_file_in_a_missing_directory_is_a_config_error(
    settings_for: Callable[..., Settings],
) -> None:
    with pytest.raises(ConfigError, match="missing directory /nonexistent/dir") as caught:
        await ensure_schema(settings_for("sqlite:////nonexistent/dir/scanner.db"))
    assert caught.value.key == "DATABASE_URL"


# -- two real processes start together on an empty database ----------------------------------


async def _start_child(url: str) -> asyncio.subprocess.Process:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "ENV"))}
    environ |= {
        "PYTHONPATH": str(ROOT),
        "ENV": "testing",
        "DATABASE_URL_DEV": url,
        "SCANNER_MIGRATE_ON_START": "true",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


def _lock_parts(key: int) -> tuple[int, int]:
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & 0xFFFFFFFF


@asynccontextmanager
async def _held_postgres_lock(url: str) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    conn = await asyncpg.connect(url)
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    classid, objid = _lock_parts(MIGRATION_LOCK_KEY)

    async def waiting() -> int:
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = $1 AND objid = $2 AND objsubid = 1",
            classid,
            objid,
        )
        return int(count)

    try:
        yield waiting
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        await conn.close()


@asynccontextmanager
async def _held_sqlite_lock(url: str) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")

    async def waiting() -> int:
        return 2  # no lock table to poll: the children report when they reach the check

    try:
        yield waiting
    finally:
        conn.execute("ROLLBACK")
        conn.close()


async def test_two_processes_starting_together_migrate_exactly_once(
    empty_db_url: str, db_backend: str, settings_for: Callable[..., Settings]
) -> None:
    hold = _held_postgres_lock if db_backend == "postgresql" else _held_sqlite_lock
    async with hold(empty_db_url) as waiting:
        children = [await _start_child(empty_db_url) for _ in range(2)]
        for child in children:  # both got as far as the check
            assert child.stdout is not None
            assert (await asyncio.wait_for(child.stdout.readline(), 30)).strip() == b"checking"

        async def both_blocked() -> bool:
            return await waiting() >= 2

        await until(both_blocked, 20, "the children blocking on the lock")
        await asyncio.sleep(0.2 if db_backend == "sqlite" else 0)
        assert all(child.returncode is None for child in children)
    outputs = [await asyncio.wait_for(child.communicate(), 60) for child in children]
    text = [out.decode() for out, _ in outputs]
    assert [child.returncode for child in children] == [0, 0], text
    assert sum(t.count("schema_upgraded") for t in text) == 1, text
    assert sorted(t.count("status upgraded=True") for t in text) == [0, 1], text
    assert migrate.current(settings_for(empty_db_url)) == migrate.head_revision()
