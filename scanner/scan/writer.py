"""One writer per chain: the live scan of a chain is held by one process at a time.

PostgreSQL: a session-level advisory lock on a dedicated connection, held while the process
scans the chain (released on exit, or by the server when the connection dies). SQLite: an
exclusive ``flock`` on a file beside the database, so one scanning process at a time; the chains
of that process share it (an ``flock`` taken through a second open file would refuse them).
"""

from __future__ import annotations

import fcntl
import os
from typing import IO

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from scanner.config import Settings
from scanner.db.locks import release_chain_lock, try_chain_lock

log = structlog.get_logger(__name__)

# SQLite lock files this process holds, by path: the open handle and how many chains use it.
_HELD_FILES: dict[str, tuple[IO[bytes], int]] = {}


def sqlite_lock_path(url: str) -> str | None:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database or ""
    if database in ("", ":memory:"):
        return None
    return f"{os.path.abspath(database)}.scanner.lock"


class ChainWriterLock:
    def __init__(self, engine: AsyncEngine | None, settings: Settings, chain: str) -> None:
        self.engine = engine
        self.chain = chain
        self.path = sqlite_lock_path(settings.database_url.get_secret_value())
        self._conn: AsyncConnection | None = None
        self._file: IO[bytes] | None = None
        self._held = False
        self._waiting_logged = False

    async def acquire(self) -> bool:
        """True while this process holds the chain; tries again on every call until it does."""
        if self._held:
            return True
        got = self._flock() if self.path is not None else await self._advisory()
        if got:
            self._held = True
            log.info("chain_lock_acquired", chain=self.chain)
        elif not self._waiting_logged:
            self._waiting_logged = True
            log.warning("chain_locked_elsewhere", chain=self.chain)
        return got

    def _flock(self) -> bool:
        assert self.path is not None
        held = _HELD_FILES.get(self.path)
        if held is not None:  # another chain of this process holds the file: share it
            _HELD_FILES[self.path] = (held[0], held[1] + 1)
            self._file = held[0]
            return True
        handle = open(self.path, "ab")  # noqa: SIM115 - held open for the process's life
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        _HELD_FILES[self.path] = (handle, 1)
        self._file = handle
        return True

    async def _advisory(self) -> bool:
        if self.engine is None:
            return True
        if self._conn is None:
            self._conn = await self.engine.connect()
        if await try_chain_lock(self._conn, self.chain):
            return True
        await self._conn.close()
        self._conn = None
        return False

    async def release(self) -> None:
        if self._file is not None and self.path is not None:
            handle, users = _HELD_FILES.pop(self.path, (self._file, 1))
            if users > 1:
                _HELD_FILES[self.path] = (handle, users - 1)
            else:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                handle.close()
            self._file = None
        if self._conn is not None:
            try:
                await release_chain_lock(self._conn, self.chain)
            finally:
                await self._conn.close()
                self._conn = None
        self._held = False
