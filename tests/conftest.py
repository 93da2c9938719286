"""Shared fixtures. Database fixtures run every test that uses them on SQLite and on PostgreSQL.

- ``db_backend``: ``"sqlite"`` or ``"postgresql"`` (the test ids); ``SCANNER_TEST_BACKENDS=sqlite``
  limits a run to one backend, e.g. on a machine without PostgreSQL.
- ``db_url``: a migrated database of its own, as the plain URL the scanner would get in
  ``DATABASE_URL_DEV`` / ``DATABASE_URL``. PostgreSQL databases are cloned (``CREATE DATABASE ...
  TEMPLATE``) from a template migrated once per test run, and dropped after the test; SQLite
  files are copied from a template file migrated once.
- ``empty_db_url``: a database with no schema at all (for migration and start-up tests).
- ``settings``: :class:`scanner.config.Settings` for ``db_url``; ``settings_for(url, **env)``
  builds others (e.g. ``SCANNER_MIGRATE_ON_START="false"``).
- ``engine`` / ``session_factory``: the application's async engine and sessions on ``db_url``.
- ``other_db_url`` / ``other_engine``: a second migrated database (and its engine) on the same
  backend, for comparing two runs.

PostgreSQL is reached through ``SCANNER_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), which must be allowed to create databases.

The order the workers take the files in: those marked ``long(seconds)`` first (about 45 seconds
of tests or more), the longest first, then the others by how many tests they hold
(:func:`pytest_collection_modifyitems`).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.config import Settings
from scanner.db import migrate
from scanner.db.engine import make_engine, make_session_factory
from scanner.testkit.postgres import PG_ADMIN_URL, pg_execute, pg_url
from scanner.testkit.settings import settings_from
from tests.deliver.support import Receiver


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files marked ``long(seconds)`` first, the longest first, then the others by how many
    tests they hold, each file's tests in their own order. With ``--dist loadfile`` a worker
    takes a whole file at a time, in this order (``--no-loadscope-reorder``): a file of few but
    long tests (the fault simulation's two take two and a half minutes) taken last would leave
    one worker running it alone at the end of the run while the other has nothing left."""
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)

    def order(tests: list[pytest.Item]) -> tuple[float, int]:
        long = tests[0].get_closest_marker("long")
        return (-long.args[0] if long is not None else 0.0, -len(tests))

    items[:] = [item for tests in sorted(files.values(), key=order) for item in tests]


pytest_plugins = ["tests.chain_fixtures"]

T = TypeVar("T")

BACKENDS = [
    b.strip()
    for b in os.environ.get("SCANNER_TEST_BACKENDS", "sqlite,postgresql").split(",")
    if b.strip()
]
_database_numbers = itertools.count(1)


def _block_on(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def pg_admin(*statements: str) -> None:
    """Run statements on the maintenance database, outside any transaction."""
    _block_on(lambda: pg_execute(PG_ADMIN_URL, *statements))


@pytest.fixture
def settings_for() -> Callable[..., Settings]:
    return settings_from


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A PostgreSQL database migrated to head once per run (per xdist worker)."""
    name = f"scanner_tpl_{os.getpid()}"
    pg_admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    try:
        migrate.upgrade(settings_from(pg_url(name)))
        yield name
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite_template") / "template.db"
    migrate.upgrade(settings_from(f"sqlite:///{path}"))
    return path


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


def _new_pg_database(template: str | None) -> Iterator[str]:
    name = f"scanner_t{os.getpid()}_{next(_database_numbers)}"
    pg_admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield pg_url(name)
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrated_database(db_backend: str, request: pytest.FixtureRequest, path: Path) -> Iterator[str]:
    """A migrated database cloned from the backend's template (a SQLite file at ``path``)."""
    if db_backend == "postgresql":
        yield from _new_pg_database(request.getfixturevalue("pg_template"))
    else:
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"


@pytest.fixture
def db_url(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of this test's own."""
    yield from migrated_database(db_backend, request, tmp_path / "scanner.db")


@pytest.fixture
def other_db_url(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Another migrated database of this test's own, on the same backend as ``db_url``."""
    yield from migrated_database(db_backend, request, tmp_path / "other.db")


@pytest.fixture
def empty_db_url(db_backend: str, tmp_path: Path) -> Iterator[str]:
    """A database without any schema."""
    if db_backend == "postgresql":
        yield from _new_pg_database(None)
    else:
        yield f"sqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture
def settings(db_url: str) -> Settings:
    return settings_from(db_url)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_session_factory(engine)


@pytest.fixture
async def other_engine(other_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings_from(other_db_url))
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real HTTP receiver for webhooks (aiohttp on 127.0.0.1)."""
    server = await Receiver().start()
    try:
        yield server
    finally:
        await server.stop()
