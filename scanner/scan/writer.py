"""One writer per chain: the live scan of a chain is held by one process at a time.

PostgreSQL: a session-level advisory lock on a dedicated connection, held while the process
scans the chain (released on exit, or by the server when the connection dies). SQLite: an
exclusive ``flock`` on a file beside the database, so one scanning process at a time; the chains
of that process share it (an ``flock`` taken through a second open file would refuse them).

A lock lost with its connection (``pg_terminate_backend``, an ``idle_session_timeout``, a
restart) is noticed twice over: every writing transaction of the chain is fenced by
:meth:`ChainWriterLock.fence` (the server's ``pg_locks`` must show this process's lock
connection as the holder, or the transaction raises :class:`~scanner.errors.ChainLockLost` and
writes nothing), and :meth:`ChainWriterLock.acquire`, called before every tick, checks the lock
connection. Either way the chain logs ``chain_lock_lost`` and takes the lock again before it
goes on (or waits, when another process took it meanwhile).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import suppress
from typing import IO

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from scanner.config import Settings
from scanner.db.errors import DRIVER_ERRORS, translated
from scanner.db.locks import backend_pid, chain_lock_holder, release_chain_lock, try_chain_lock
from scanner.errors import ChainLockLost, DatabaseError
from scanner.observe.metrics import Metrics

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


_SAID: set[str] = set()


def _sqlite_second_process(path: str) -> None:
    """Say once per process, loudly, that SQLite runs one scanning process at a time."""
    if path in _SAID:
        return
    _SAID.add(path)
    log.error(
        "sqlite_single_process",
        lock_file=path,
        message="SQLite runs one scanning process at a time: another scanner holds this "
        "database, so this one stands by until it exits; use PostgreSQL to share the chains "
        "between several instances",
    )


class ChainWriterLock:
    def __init__(
        self,
        engine: AsyncEngine | None,
        settings: Settings,
        chain: str,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.chain = chain
        self.path = sqlite_lock_path(settings.database_url.get_secret_value())
        self._conn: AsyncConnection | None = None
        self._file: IO[bytes] | None = None
        self._held = False
        self._waiting_logged = False
        self._pid: int | None = None  # the lock connection's server process (PostgreSQL)

    async def acquire(self) -> bool:
        """True while this process holds the chain; tries again on every call until it does.

        A lock held before is checked first: lost with its connection, it is taken again."""
        if self._held and await self._still_held():
            return True
        got = self._flock() if self.path is not None else await self._advisory()
        if got:
            self._held = True
            self._waiting_logged = False
            log.info("chain_lock_acquired", chain=self.chain)
        elif not self._waiting_logged:
            self._waiting_logged = True
            log.warning("chain_locked_elsewhere", chain=self.chain)
            if self.path is not None:
                _sqlite_second_process(self.path)
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
        try:
            async with translated(self.engine.url.render_as_string(hide_password=True)):
                if self._conn is None:
                    self._conn = await self.engine.connect()
                if await try_chain_lock(self._conn, self.chain):
                    self._pid = await backend_pid(self._conn)
                    return True
        except DatabaseError:
            await self._discard()
            raise
        await self._discard()
        return False

    async def _still_held(self) -> bool:
        """Whether the lock connection is alive and the server still shows its lock."""
        if self._conn is None or self._pid is None:
            return True  # SQLite's flock, or no database: held for the process's life
        try:
            async with translated():
                holder = await chain_lock_holder(self._conn, self.chain)
                await self._conn.commit()
        except DatabaseError as exc:
            await self.lost(str(exc))
            return False
        if holder != self._pid:
            await self.lost(f"the server shows the lock held by {holder or 'nobody'}")
            return False
        return True

    async def fence(self, session: AsyncSession) -> None:
        """Inside a writing transaction: raise ChainLockLost unless this process still holds
        the chain (on PostgreSQL; the process-wide flock of SQLite cannot be lost)."""
        if self._pid is None:
            return
        holder = await chain_lock_holder(session, self.chain)
        if holder != self._pid:
            raise ChainLockLost(
                f"chain {self.chain!r}: the writer lock is gone from this process "
                f"(held by {holder or 'nobody'}): nothing written, taking it again",
                chain=self.chain,
            )

    async def lost(self, reason: str) -> None:
        """The lock is gone: say so, drop its connection; the next acquire() takes it again."""
        if self._held:
            log.error("chain_lock_lost", chain=self.chain, reason=reason)
            if self.metrics is not None:
                self.metrics.chain_lock_lost(self.chain)
        self._held = False
        await self._discard()

    async def _discard(self) -> None:
        """Drop the lock connection whatever its state (the server frees its locks)."""
        conn, self._conn, self._pid = self._conn, None, None
        if conn is None:
            return
        with suppress(*DRIVER_ERRORS):
            await conn.invalidate()
        with suppress(*DRIVER_ERRORS):
            await conn.close()

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
                await self._conn.close()
                self._conn = self._pid = None
            except DRIVER_ERRORS:  # the connection is gone, and the lock with it
                await self._discard()
        self._held = False
