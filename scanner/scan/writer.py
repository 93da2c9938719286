"""One scanning process on SQLite: an exclusive ``flock`` on a file beside the database.

SQLite runs one ``scanner run`` at a time; the chains of that process share the lock (an
``flock`` taken through a second open file would refuse them). A second process stands by, says
so (``sqlite_single_process``, a warning: standing by is no error), and takes over when the
first exits. On PostgreSQL several instances share the chains under leases instead
(:mod:`scanner.scan.leases`).
"""

from __future__ import annotations

import fcntl
import os
from typing import IO

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.config import Settings

log = structlog.get_logger(__name__)

# SQLite lock files this process holds, by path: the open handle and how many chains use it.
_HELD_FILES: dict[str, tuple[IO[bytes], int]] = {}
_SAID: set[str] = set()


def sqlite_lock_path(url: str) -> str | None:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database or ""
    if database in ("", ":memory:"):
        return None
    return f"{os.path.abspath(database)}.scanner.lock"


def _sqlite_second_process(path: str) -> None:
    """Say once per process, loudly, that SQLite runs one scanning process at a time."""
    if path in _SAID:
        return
    _SAID.add(path)
    log.warning(
        "sqlite_single_process",
        lock_file=path,
        message="SQLite runs one scanning process at a time: another scanner holds this "
        "database, so this one stands by until it exits; use PostgreSQL to share the chains "
        "between several instances",
    )


class ChainWriterLock:
    """The chain's share of the process's SQLite lock file (an in-memory database: none)."""

    #: no server-side idle limit: SQLite has one writing process, nobody waits for its lock
    idle_seconds: float | None = None

    def __init__(self, settings: Settings, chain: str) -> None:
        self.chain = chain
        self.path = sqlite_lock_path(settings.database_url.get_secret_value())
        self._file: IO[bytes] | None = None
        self._held = False
        self._waiting_logged = False

    async def acquire(self) -> bool:
        """True while this process holds the chain; tries again on every call until it does."""
        if self._held:
            return True
        got = self._flock() if self.path is not None else True
        if got:
            self._held = True
            self._waiting_logged = False
            log.info("chain_lock_acquired", chain=self.chain)
        elif not self._waiting_logged:
            self._waiting_logged = True
            log.warning("chain_locked_elsewhere", chain=self.chain)
            assert self.path is not None
            _sqlite_second_process(self.path)
        return got

    def held_elsewhere(self) -> bool:
        """After a refused :meth:`acquire`: another process holds the lock file (a standby)."""
        return not self._held

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

    async def fence(self, session: AsyncSession) -> None:
        """Nothing to check: a process-wide ``flock`` cannot be lost while the process lives."""

    async def lost(self, reason: str) -> None:
        """Never called for a file lock (nothing raises ChainLockLost on SQLite)."""
        log.error("chain_lock_lost", chain=self.chain, reason=reason)
        self._held = False

    async def release(self) -> None:
        if self._file is not None and self.path is not None:
            handle, users = _HELD_FILES.pop(self.path, (self._file, 1))
            if users > 1:
                _HELD_FILES[self.path] = (handle, users - 1)
            else:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                handle.close()
            self._file = None
        self._held = False
