"""The async engine and session factory, built from the configured (synchronous-style) URL.

``postgresql://`` / ``postgres://`` become ``postgresql+asyncpg://`` with a sized, pre-pinged
pool; ``sqlite:///`` becomes ``sqlite+aiosqlite:///``, and every SQLite connection is opened with
``journal_mode=WAL`` (``synchronous=NORMAL``), a ``busy_timeout`` (the pool timeout) and
``foreign_keys=ON``.

SQLite transactions start with ``BEGIN IMMEDIATE``: a transaction takes the write lock when it
begins, so writers queue on ``busy_timeout`` instead of failing with ``SQLITE_BUSY`` when a read
lock cannot be upgraded. It also makes DDL transactional (migrations commit or roll back whole).
A connection with the execution option :data:`DEFERRED_BEGIN` (a dry run, which writes only
temporary tables) begins with a plain ``BEGIN`` and takes no write lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from sqlalchemy import URL, event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from scanner.config import DatabaseSettings, Settings
from scanner.db.errors import Session
from scanner.db.tls import split
from scanner.errors import ConfigError
from scanner.secrets import redact_url

_POSTGRES_DRIVERS = {"postgresql", "postgres", "postgresql+asyncpg"}
_SQLITE_DRIVERS = {"sqlite", "sqlite+aiosqlite"}
APPLICATION_NAME = "ctrip-scanner"
DEFERRED_BEGIN = "scanner_deferred_begin"


def _bad_url(url: str, problem: str) -> ConfigError:
    return ConfigError(
        f"database URL {redact_url(url)} {problem} "
        "(set DATABASE_URL, DATABASE_URL_DEV or [database] url)",
        key="DATABASE_URL",
    )


def async_url(url: str) -> URL:
    """The async-driver URL for a configured ``postgresql://`` or ``sqlite:///`` URL."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # The parser's message may quote the URL; keep the password out of the chain.
        raise _bad_url(url, "cannot be parsed") from None
    driver = parsed.drivername
    if driver in _POSTGRES_DRIVERS:
        return parsed.set(drivername="postgresql+asyncpg")
    if driver in _SQLITE_DRIVERS:
        return parsed.set(drivername="sqlite+aiosqlite")
    raise _bad_url(url, f"has an unsupported scheme {driver!r}: use postgresql:// or sqlite:///")


def make_engine(settings: Settings, *, migrating: bool = False) -> AsyncEngine:
    """The application's engine for ``settings.database_url``."""
    return engine_for_url(
        settings.database_url.get_secret_value(),
        settings.database,
        migrating=migrating,
        production=settings.env == "production",
    )


def engine_for_url(
    url: str,
    options: DatabaseSettings | None = None,
    *,
    migrating: bool = False,
    production: bool = False,
) -> AsyncEngine:
    """An engine for a configured URL.

    ``migrating=True`` is for schema changes: no pool (nothing stays connected), and on SQLite
    ``foreign_keys=OFF``, since batch migrations rebuild referenced tables. ``production``:
    a PostgreSQL URL without ``sslmode`` requires TLS (:mod:`scanner.db.tls`).
    """
    options = options or DatabaseSettings()
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        return _sqlite_engine(target, options, migrating=migrating)
    target, tls = split(target, production=production)
    return _postgres_engine(target, options, tls, migrating=migrating)


def _postgres_engine(
    url: URL, options: DatabaseSettings, tls: object, *, migrating: bool
) -> AsyncEngine:
    connect_args: dict[str, Any] = {"server_settings": {"application_name": APPLICATION_NAME}}
    if tls is not None:
        connect_args["ssl"] = tls
    kwargs: dict[str, Any] = {"echo": options.echo, "connect_args": connect_args}
    if migrating:
        kwargs["poolclass"] = NullPool
    else:
        kwargs.update(
            pool_size=options.pool_size,
            max_overflow=options.max_overflow,
            pool_timeout=options.pool_timeout,
            pool_pre_ping=options.pool_pre_ping,
        )
    return create_async_engine(url, **kwargs)


def _check_sqlite_directory(url: URL) -> None:
    """A missing directory is a configuration mistake; say so before aiosqlite fails to open."""
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    directory = Path(database).expanduser().parent
    if not directory.is_dir():
        raise _bad_url(url.render_as_string(), f"points into a missing directory {directory}")


def _sqlite_engine(url: URL, options: DatabaseSettings, *, migrating: bool) -> AsyncEngine:
    _check_sqlite_directory(url)
    kwargs: dict[str, Any] = {"echo": options.echo}
    if migrating:
        kwargs["poolclass"] = NullPool
    engine = create_async_engine(url, **kwargs)
    install_sqlite_hooks(
        engine, busy_timeout_ms=int(options.pool_timeout * 1000), foreign_keys=not migrating
    )
    return engine


def install_sqlite_hooks(engine: AsyncEngine, *, busy_timeout_ms: int, foreign_keys: bool) -> None:
    """Pragmas on every new connection, and ``BEGIN IMMEDIATE`` at every transaction start."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module; _on_begin emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms:d}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # With WAL, NORMAL syncs at checkpoints instead of every commit: still atomic and
            # consistent after a crash; a power cut may lose the last commits (they rescan).
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        deferred = connection.get_execution_options().get(DEFERRED_BEGIN, False)
        connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded values after commit (``expire_on_commit=False``) and turn the
    database's errors into ``DatabaseError`` (:class:`scanner.db.errors.Session`)."""
    factory = async_sessionmaker(engine, expire_on_commit=False, class_=Session)
    return cast("async_sessionmaker[AsyncSession]", factory)
