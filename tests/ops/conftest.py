"""Fixtures of the operations tests: sessions on the second migrated database (``other_engine``,
from tests/conftest.py)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.db.engine import make_session_factory


@pytest.fixture
def other_sessions(other_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_session_factory(other_engine)
