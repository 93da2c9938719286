"""The database drops the connection that holds a chain's writer lock (``pg_terminate_backend``,
as a DBA or an ``idle_session_timeout`` would): the holder notices, stops, logs
``chain_lock_lost`` and takes the lock again before going on; never do two processes write the
chain at once; SIGTERM exits 0 whatever state the connections are in. Real processes, a real
anvil, a real PostgreSQL (the advisory lock is PostgreSQL's; SQLite holds a file lock)."""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from scanner.db.locks import chain_lock_key
from tests.conftest import BACKENDS
from tests.e2e.actions import pay
from tests.e2e.harness import CHAIN, Harness
from tests.ops.support import json_lines, scanner_env, scanner_process, wait_until, write_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True),
    pytest.mark.skipif("postgresql" not in BACKENDS, reason="needs PostgreSQL"),
]
ALICE, BOB, CAROL = "0x" + "a1" * 20, "0x" + "b2" * 20, "0x" + "c3" * 20


def _lock_columns() -> tuple[int, int]:
    unsigned = chain_lock_key(CHAIN) & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


async def lock_holders(db_url: str) -> list[int]:
    """The backends holding the chain's writer lock, from the server's own view (pg_locks)."""
    classid, objid = _lock_columns()
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            " AND classid::bigint = $1 AND objid::bigint = $2"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            classid,
            objid,
        )
        return [int(r["pid"]) for r in rows]
    finally:
        await conn.close()


async def terminate(db_url: str, pids: list[int]) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        for pid in pids:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def retaken(db_url: str, old: int, seconds: float = 20.0) -> int:
    """The backend that holds the lock once a process took it again after ``old`` lost it."""
    for _ in range(int(seconds / 0.05)):
        holders = await lock_holders(db_url)
        if holders not in ([], [old]):
            (holder,) = holders
            return holder
        await asyncio.sleep(0.05)
    raise AssertionError(f"nobody took the lock again within {seconds} s")


def _events(text: str, name: str | None = None) -> list[dict[str, Any]]:
    return [e for e in json_lines(text) if name is None or e.get("event") == name]


def _ranges(text: str) -> list[tuple[int, int]]:
    return [(int(e["from_block"]), int(e["to_block"])) for e in _events(text, "range_scanned")]


async def test_a_terminated_lock_connection_is_noticed_and_one_process_writes_at_a_time(
    h: Harness, db_url: str, tmp_path: Path
) -> None:
    ids = {a: await h.create_payment(a, "1") for a in (ALICE, BOB, CAROL)}
    pay(h, ALICE, 1_000_000)
    config = write_config(
        tmp_path / "scanner.toml",
        h.chain.url,
        [("USDT", h.token, 6), ("DAI", h.token18, 18)],
        poll_interval=0.1,
    )
    env = scanner_env(db_url)
    with scanner_process(["run", "--config", str(config)], env) as first:
        wait_until(lambda: _events(first.err(), "chain_lock_acquired"), 20, what="first lock")
        with scanner_process(["run", "--config", str(config)], env) as second:
            wait_until(lambda: _events(second.err(), "chain_locked_elsewhere"), 20, what="waits")
            await _lose_the_lock_and_go_on(h, db_url, first, second)
    for pid in ids.values():
        (tx,) = await h.transactions(pid)
        assert tx["value"] == 1_000_000 and tx["status"] != "orphaned"
        detected = [e for e in await h.events(pid) if e[0] == "transfer_detected"]
        assert len(detected) == 1


async def _lose_the_lock_and_go_on(h: Harness, db_url: str, first: Any, second: Any) -> None:
    h.mine(3)
    wait_until(lambda: _ranges(first.err()), 20, what="first scans")
    (holder,) = await lock_holders(db_url)

    await terminate(db_url, [holder])  # the DBA kills the lock-holding backend
    wait_until(lambda: _events(first.err(), "chain_lock_lost"), 20, what="the loss noticed")
    new_holder = await retaken(db_url, holder)
    assert new_holder != holder
    acquired = len(_events(first.err(), "chain_lock_acquired")) + len(
        _events(second.err(), "chain_lock_acquired")
    )
    assert acquired == 2, "the lock was taken again, and logged"

    for address in (BOB, CAROL):  # scanning goes on, by whoever holds the chain now
        pay(h, address, 1_000_000)
    h.mine(4)
    head = h.chain.head()

    def scanned_to() -> int:
        return max((r[1] for r in _ranges(first.err()) + _ranges(second.err())), default=0)

    wait_until(lambda: scanned_to() >= head, 30, what="the head scanned")
    # Exactly one writer at any moment: no block range was committed by both processes.
    committed = sorted(_ranges(first.err()) + _ranges(second.err()))
    for (_, end), (start, _) in itertools.pairwise(committed):
        assert start > end, f"a range was committed twice: {committed}"
    assert len(await lock_holders(db_url)) == 1

    first.send_signal(signal.SIGTERM)
    second.send_signal(signal.SIGTERM)
    assert first.exit_within(20)[0] == 0, first.err()[-2000:]
    assert second.exit_within(20)[0] == 0, second.err()[-2000:]


async def test_sigterm_exits_0_after_every_connection_was_terminated(
    h: Harness, db_url: str, tmp_path: Path
) -> None:
    await h.scan()
    config = write_config(
        tmp_path / "scanner.toml", h.chain.url, [("USDT", h.token, 6)], poll_interval=5.0
    )
    with scanner_process(["run", "--config", str(config)], scanner_env(db_url)) as proc:
        wait_until(lambda: _events(proc.err(), "scanner_ready"), 20, what="ready")
        conn = await asyncpg.connect(db_url)
        try:  # every connection of the scanner, the lock's and the pool's
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'ctrip-scanner' AND datname = current_database()"
            )
        finally:
            await conn.close()
        assert killed >= 1
        proc.send_signal(signal.SIGTERM)  # mid-sleep: the loop has not seen the loss yet
        code, _ = proc.exit_within(20)
        assert code == 0, proc.err()[-3000:]
        assert "Traceback" not in proc.err()
