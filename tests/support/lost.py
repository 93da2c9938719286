"""A database that goes back: what a failover to a standby that lacked the newest commits does,
on either backend, without a second server.

:func:`taken` copies the database as it stands (the standby's last replayed state);
:meth:`Snapshot.restore` puts that copy in its place, so every commit since is gone while the
processes that made them (their memory) go on. PostgreSQL's sequences go back with it: ids are
handed out again, as a promoted standby hands them out.

The engine's pooled connections are closed on the way (a moved address drops them too); the next
session opens new ones.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import suppress
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from scanner.testkit.postgres import PG_ADMIN_URL, pg_execute


@dataclass
class Snapshot:
    engine: AsyncEngine
    copy: str  # the SQLite file or the PostgreSQL database holding the copy

    async def restore(self) -> None:
        """The database as it was when the snapshot was taken (the copy is kept)."""
        await self.engine.dispose()
        database = str(self.engine.url.database)
        if _postgres(self.engine):
            await pg_execute(
                PG_ADMIN_URL,
                f'DROP DATABASE "{database}" WITH (FORCE)',
                f'CREATE DATABASE "{database}" TEMPLATE "{self.copy}"',
            )
        else:
            _sqlite_copy(self.copy, database)

    async def drop(self) -> None:
        if _postgres(self.engine):
            await pg_execute(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{self.copy}" WITH (FORCE)')
        else:
            with suppress(FileNotFoundError):
                os.remove(self.copy)


async def taken(engine: AsyncEngine) -> Snapshot:
    """A copy of ``engine``'s database as it stands now."""
    await engine.dispose()
    database = str(engine.url.database)
    if _postgres(engine):
        copy = f"{database}_lost"
        await pg_execute(PG_ADMIN_URL, f'CREATE DATABASE "{copy}" TEMPLATE "{database}"')
    else:
        copy = f"{database}.standby"
        _sqlite_copy(database, copy)
    return Snapshot(engine, copy)


def _postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


def _sqlite_copy(source: str, target: str) -> None:
    """``source`` into ``target`` by SQLite's online backup (WAL frames included)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
