"""The PostgreSQL server the tests and the benchmarks create their databases on.

``SCANNER_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) must be
allowed to create databases and roles.
"""

from __future__ import annotations

import os

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import make_url

PG_ADMIN_URL = os.environ.get(
    "SCANNER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def pg_url(database: str, server: str = PG_ADMIN_URL) -> str:
    """The URL of ``database`` on ``server`` (same host, user and password)."""
    return make_url(server).set(database=database).render_as_string(hide_password=False)


async def pg_execute(url: str, *statements: str) -> None:
    """Run ``statements`` in turn on the database at ``url``, outside any transaction."""
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()
