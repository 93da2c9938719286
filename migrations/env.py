"""Alembic environment: the application's URL, async on PostgreSQL, batch mode on SQLite.

Where the database comes from, first match wins:
1. ``config.attributes["connection"]``: a connection handed in by :mod:`scanner.db.migrate`
   (``scanner migrate ...`` and the start-up check), already under the migration lock;
2. ``config.attributes["settings"]``: resolved settings handed in programmatically;
3. ``alembic -x url=...`` or ``sqlalchemy.url`` set on the config (tests, one-off runs);
4. :func:`scanner.config.load_settings`: exactly what ``scanner run`` would use
   (``ENV``, ``DATABASE_URL`` / ``DATABASE_URL_DEV``, ``SCANNER_CONFIG``; default ./scanner.db).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from scanner.config import Settings, load_settings
from scanner.db.engine import async_url, engine_for_url, make_engine
from scanner.db.migrate import context_options, quiet_expression_index_warnings

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _override_url() -> str | None:
    return context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )


def _settings() -> Settings:
    given: Settings | None = config.attributes.get("settings")
    return given if given is not None else load_settings()


def _engine() -> AsyncEngine:
    url = _override_url()
    if url:
        return engine_for_url(url, migrating=True)
    return make_engine(_settings(), migrating=True)


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, **context_options(connection.dialect.name))
    with quiet_expression_index_warnings(), context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = _engine()
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    """``alembic upgrade head --sql``: print the SQL instead of running it."""
    url = async_url(_override_url() or _settings().database_url.get_secret_value())
    options = context_options(url.get_backend_name())
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **options,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
