"""On PostgreSQL every transaction that takes a chain's transaction lock first sets the server's
idle limit (a live scan under a lease: 2 leases, at least 15 s; a backfill's commit and a rewind:
60 s), so that a process frozen anywhere after taking the lock holds the chain for that long at
most, never until it wakes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from scanner.chain.reader import ChainReader
from scanner.db.locks import chain_xact_key
from scanner.scan.backfill import Backfill
from scanner.scan.leases import LeaseKeeper
from scanner.scan.live import ChainScanner
from scanner.scan.operator import rewind_chain
from scanner.scan.parts import ChainParts
from scanner.testkit.settings import CHAIN
from tests.conftest import BACKENDS
from tests.e2e.actions import pay
from tests.e2e.harness import Harness

pytestmark = [
    pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True),
    pytest.mark.skipif("postgresql" not in BACKENDS, reason="the chain's lock is PostgreSQL's"),
]
LEASED = "SET LOCAL idle_in_transaction_session_timeout = 16000"  # 2 leases of 8 s
COMMAND = "SET LOCAL idle_in_transaction_session_timeout = 60000"


@contextmanager
def chain_locks(engine: AsyncEngine) -> Iterator[list[str]]:
    """The statement run just before each chain lock taken meanwhile (any connection)."""
    runs: dict[int, list[str]] = defaultdict(list)  # per connection, in order
    before: list[str] = []
    key = chain_xact_key(CHAIN)

    def seen(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        run = runs[id(conn.connection.dbapi_connection)]
        if "pg_advisory_xact_lock" in statement and key in (params or ()):
            before.append(run[-1].strip() if run else "")
        run.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        yield before
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)


async def test_a_leased_live_scan_sets_the_idle_limit_before_every_chain_lock(
    h: Harness,
) -> None:
    keeper = LeaseKeeper(h.sessions, [CHAIN], 8.0)
    await keeper.beat()
    keeper.first_beat.set()  # as its run() does
    lease = keeper.chain(CHAIN)
    assert await lease.acquire() and lease.idle_seconds == 16.0
    reader = ChainReader.from_settings(h.chain_settings, h.metrics)
    parts = ChainParts(
        h.chain_settings, reader, h.sessions, fence=lease.fence, idle_seconds=lease.idle_seconds
    )
    h.scanner = ChainScanner(parts)
    await h.scanner.prepare()
    paid = await h.create_payment("0x" + "b1" * 20, "2")
    pay(h, "0x" + "b1" * 20, 2_000_000)
    h.mine(4)
    with chain_locks(h.engine) as before:
        await h.scanner.scan_until_head()
    assert (await h.payment(paid))["status"] == "confirmed"
    assert len(before) >= 2  # the range's commit and the confirmation's, at least
    assert set(before) == {LEASED}, before


async def test_a_backfill_and_a_rewind_set_the_idle_limit_before_the_chain_lock(
    h: Harness,
) -> None:
    paid = await h.create_payment("0x" + "b2" * 20, "3")
    pay(h, "0x" + "b2" * 20, 3_000_000)
    h.mine(4)
    reader = ChainReader.from_settings(h.chain_settings, None)
    try:
        with chain_locks(h.engine) as backfilled:
            await Backfill(ChainParts(h.chain_settings, reader, h.sessions)).run(0, h.chain.head())
        assert (await h.payment(paid))["status"] in {"confirming", "confirmed"}  # credited
        assert backfilled and set(backfilled) == {COMMAND}, backfilled
        await h.scan()
        with chain_locks(h.engine) as rewound:
            await rewind_chain(h.chain_settings, reader, h.sessions, h.chain.head() - 1)
        assert rewound == [COMMAND]
    finally:
        await reader.client.aclose()
