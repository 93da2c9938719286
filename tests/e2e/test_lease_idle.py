"""Under a lease (PostgreSQL), every chain transaction of a live scan sets the server's idle
limit before it takes the chain's transaction lock: a process frozen right after the lock holds
the chain for that long at most, never until it wakes."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from sqlalchemy import event

from scanner.chain.reader import ChainReader
from scanner.db.locks import chain_xact_key
from scanner.scan.leases import LeaseKeeper
from scanner.scan.live import ChainScanner
from scanner.scan.parts import ChainParts
from scanner.testkit.settings import CHAIN
from tests.conftest import BACKENDS
from tests.e2e.actions import pay
from tests.e2e.harness import Harness

pytestmark = [
    pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True),
    pytest.mark.skipif("postgresql" not in BACKENDS, reason="leases are PostgreSQL's"),
]
IDLE = "SET LOCAL idle_in_transaction_session_timeout = 16000"  # 2 leases of 8 s


async def test_every_chain_lock_of_a_leased_scan_comes_after_its_idle_limit(h: Harness) -> None:
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

    statements: dict[int, list[str]] = defaultdict(list)  # per connection, in order
    key = chain_xact_key(CHAIN)

    def seen(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "pg_advisory_xact_lock" in statement and key not in (params or ()):
            return  # another lock (the events'): not the chain's
        statements[id(conn.connection.dbapi_connection)].append(statement)

    event.listen(h.engine.sync_engine, "before_cursor_execute", seen)
    try:
        await h.scanner.scan_until_head()
    finally:
        event.remove(h.engine.sync_engine, "before_cursor_execute", seen)
    assert (await h.payment(paid))["status"] == "confirmed"
    locks = 0
    for run in statements.values():
        for i, statement in enumerate(run):
            if "pg_advisory_xact_lock" in statement:
                locks += 1
                assert i > 0 and run[i - 1].strip() == IDLE, run[max(i - 2, 0) : i + 1]
    assert locks >= 2  # the range's commit and the confirmation's, at least
