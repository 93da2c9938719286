"""A reference consumer of the scanner's outbox, ``payment_events``: copy it into the gateway.

- It reads the events in id order, ``WHERE id > last_id``, a batch at a time, and keeps its
  position (``last_id`` and that row's ``event_key``) in a table of its own, in the same
  transaction as what it does with the events: a crash repeats no effect and skips no event.
- It handles each event once, by ``event_key`` (a uuid that names one fact for good), never by
  ``id``: after a failover to a PostgreSQL standby that lacked the newest commits, the scanner
  writes the lost facts again under the same keys, and ids may be handed out again to other
  events. When the row at ``last_id`` is gone or carries another key, the database went back:
  it reads again from the newest event it had handled, and the keys it has are skipped.
- It wakes on ``NOTIFY payment_events`` (PostgreSQL) and polls as a fallback (SQLite: polls).

Run it with a SQLAlchemy async URL (``postgresql+asyncpg://…`` or ``sqlite+aiosqlite:///…``)
and a ``handle(connection, event)`` coroutine that does the gateway's work in the transaction.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

Handler = Callable[[AsyncConnection, dict[str, Any]], Awaitable[None]]

SETUP = [
    "CREATE TABLE IF NOT EXISTS gateway_consumer ("
    " name VARCHAR(64) PRIMARY KEY, last_id BIGINT NOT NULL, last_key VARCHAR(36))",
    "CREATE TABLE IF NOT EXISTS gateway_seen_events (event_key VARCHAR(36) PRIMARY KEY)",
]
NEXT = text(
    "SELECT id, event_key, payment_id, type, status_from, status_to, data, created_at"
    " FROM payment_events WHERE id > :last ORDER BY id LIMIT :limit"
)


class Consumer:
    def __init__(self, url: str, handle: Handler, *, name: str = "gateway") -> None:
        self.engine: AsyncEngine = create_async_engine(url)
        self.handle = handle
        self.name = name
        self.batch = 500
        self.poll_seconds = 1.0

    async def setup(self) -> None:
        async with self.engine.begin() as conn:
            for statement in SETUP:
                await conn.execute(text(statement))
            await conn.execute(
                text(
                    "INSERT INTO gateway_consumer (name, last_id)"
                    " SELECT CAST(:name AS VARCHAR(64)), 0"
                    " WHERE NOT EXISTS (SELECT 1 FROM gateway_consumer WHERE name = :other)"
                ),
                {"name": self.name, "other": self.name},
            )

    async def run_once(self) -> int:
        """One batch in one transaction: the events after the position, each handled once."""
        handled = 0
        async with self.engine.begin() as conn:
            last = await self._position(conn)
            rows = (await conn.execute(NEXT, {"last": last, "limit": self.batch})).mappings()
            newest: tuple[int, str] | None = None
            for row in rows.all():
                event = dict(row)
                if isinstance(event["data"], str):  # SQLite hands JSON back as text
                    event["data"] = json.loads(event["data"])
                newest = (event["id"], event["event_key"])
                if await self._first_time(conn, event["event_key"]):
                    await self.handle(conn, event)
                    handled += 1
            if newest is not None:
                await conn.execute(
                    text(
                        "UPDATE gateway_consumer SET last_id = :id, last_key = :key WHERE name = :n"
                    ),
                    {"id": newest[0], "key": newest[1], "n": self.name},
                )
        return handled

    async def _position(self, conn: AsyncConnection) -> int:
        """``last_id``, unless the row there no longer carries ``last_key`` (the database went
        back): then the newest event already handled, the start of a re-read."""
        last_id, last_key = (
            await conn.execute(
                text("SELECT last_id, last_key FROM gateway_consumer WHERE name = :n"),
                {"n": self.name},
            )
        ).one()
        if last_key is None:
            return int(last_id)
        there = (
            await conn.execute(
                text("SELECT event_key FROM payment_events WHERE id = :id"), {"id": last_id}
            )
        ).scalar_one_or_none()
        if there == last_key:
            return int(last_id)
        handled = await conn.execute(
            text(
                "SELECT max(e.id) FROM payment_events e"
                " JOIN gateway_seen_events s ON s.event_key = e.event_key"
            )
        )
        return int(handled.scalar_one() or 0)

    async def _first_time(self, conn: AsyncConnection, key: str) -> bool:
        seen = await conn.execute(
            text("SELECT 1 FROM gateway_seen_events WHERE event_key = :k"), {"k": key}
        )
        if seen.first() is not None:
            return False
        await conn.execute(
            text("INSERT INTO gateway_seen_events (event_key) VALUES (:k)"), {"k": key}
        )
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: a batch whenever NOTIFY says so, or every ``poll_seconds``."""
        await self.setup()
        wake = asyncio.Event()
        listener = await self._listen(wake)
        try:
            while not stop.is_set():
                while await self.run_once() or wake.is_set():
                    wake.clear()
                waits = [asyncio.ensure_future(e.wait()) for e in (wake, stop)]
                await asyncio.wait(waits, timeout=self.poll_seconds, return_when="FIRST_COMPLETED")
                for waiting in waits:
                    waiting.cancel()
        finally:
            if listener is not None:
                await listener.close()

    async def _listen(self, wake: asyncio.Event) -> AsyncConnection | None:
        if self.engine.dialect.name != "postgresql":
            return None
        conn = await self.engine.connect()
        raw: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg's connection
        await raw.add_listener("payment_events", lambda *_: wake.set())
        return conn

    async def aclose(self) -> None:
        await self.engine.dispose()
