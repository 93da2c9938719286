"""Fixtures of the operations tests: a second migrated database on the same backend."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.db.engine import make_engine, make_session_factory
from tests.chain_fixtures import anvil, devchain  # noqa: F401
from tests.conftest import _new_pg_database, settings_from
from tests.e2e.conftest import h  # noqa: F401


@pytest.fixture
def other_db_url(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Another migrated database of this test's own, on the same backend as ``db_url``."""
    if db_backend == "postgresql":
        yield from _new_pg_database(request.getfixturevalue("pg_template"))
    else:
        path = tmp_path / "other.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"


@pytest.fixture
async def other_engine(other_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings_from(other_db_url))
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def other_sessions(other_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_session_factory(other_engine)
