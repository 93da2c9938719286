"""The database drops the scanner's connections (``pg_terminate_backend``, as a DBA or an
``idle_session_timeout`` would): the chain's lease is a row, not a connection, so the holder goes
on; a lease taken from under the holder fences its every write (``chain_lease_lost``, nothing
written) until it holds the chain again; SIGTERM exits 0 whatever state the connections are in.
Real processes, a real anvil, a real PostgreSQL (leases are PostgreSQL's; SQLite holds a file
lock)."""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.conftest import BACKENDS
from tests.e2e.actions import pay
from tests.e2e.harness import Harness
from tests.ops.support import json_lines, scanner_env, scanner_process, write_config
from tests.support.wait import until_sync

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True),
    pytest.mark.skipif("postgresql" not in BACKENDS, reason="needs PostgreSQL"),
]
ALICE, BOB, CAROL = "0x" + "a1" * 20, "0x" + "b2" * 20, "0x" + "c3" * 20


async def sql(db_url: str, statement: str) -> Any:
    conn = await asyncpg.connect(db_url)
    try:
        return await conn.fetchval(statement)
    finally:
        await conn.close()


KILL_ALL = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE application_name = 'ctrip-scanner' AND datname = current_database()"
)


def _events(text: str, name: str | None = None) -> list[dict[str, Any]]:
    return [e for e in json_lines(text) if name is None or e.get("event") == name]


def _ranges(text: str) -> list[tuple[int, int]]:
    return [(int(e["from_block"]), int(e["to_block"])) for e in _events(text, "range_scanned")]


async def test_lost_connections_keep_the_lease_and_a_taken_lease_fences_every_write(
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
        until_sync(lambda: _events(first.err(), "chain_lease_acquired"), 20, what="first lease")
        with scanner_process(["run", "--config", str(config)], env) as second:
            until_sync(lambda: _events(second.err(), "chain_held_elsewhere"), 20, what="waits")
            await _lose_the_lease_and_go_on(h, db_url, first, second)
    for pid in ids.values():
        (tx,) = await h.transactions(pid)
        assert tx["value"] == 1_000_000 and tx["status"] != "orphaned"
        detected = [e for e in await h.events(pid) if e[0] == "transfer_detected"]
        assert len(detected) == 1


async def _lose_the_lease_and_go_on(h: Harness, db_url: str, first: Any, second: Any) -> None:
    h.mine(3)
    until_sync(lambda: _ranges(first.err()), 20, what="first scans")
    assert await sql(db_url, KILL_ALL) >= 1  # a DBA kills every connection: the lease is a row
    pay(h, BOB, 1_000_000)
    h.mine(1)
    head = h.chain.head()
    until_sync(lambda: max(r[1] for r in _ranges(first.err())) >= head, 20, what="first goes on")
    assert not _events(first.err(), "chain_lease_lost")

    # The lease is taken from under the holder (as when it froze and another took over): its
    # next write is fenced, and it writes nothing while somebody else holds the chain.
    await sql(
        db_url,
        "UPDATE chain_leases SET instance_id = 'someone-else',"
        " lease_expires_at = clock_timestamp() + interval '1 hour' RETURNING chain",
    )
    h.mine(2)
    until_sync(lambda: _events(first.err(), "chain_lease_lost"), 20, what="the loss noticed")
    before = _ranges(first.err()) + _ranges(second.err())
    pay(h, CAROL, 1_000_000)
    h.mine(4)
    await asyncio.sleep(1.5)
    assert _ranges(first.err()) + _ranges(second.err()) == before, "written without the lease"

    await sql(db_url, "UPDATE chain_leases SET instance_id = NULL RETURNING chain")  # handed back
    head = h.chain.head()

    def scanned_to() -> int:
        return max((r[1] for r in _ranges(first.err()) + _ranges(second.err())), default=0)

    until_sync(lambda: scanned_to() >= head, 30, what="the head scanned")
    committed = sorted(_ranges(first.err()) + _ranges(second.err()))
    for (_, end), (start, _) in itertools.pairwise(committed):
        assert start > end, f"a range was committed twice: {committed}"

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
        until_sync(lambda: _events(proc.err(), "scanner_ready"), 20, what="ready")
        killed = await sql(db_url, KILL_ALL)  # every connection of the scanner
        assert killed >= 1
        proc.send_signal(signal.SIGTERM)  # mid-sleep: the loop has not seen the loss yet
        code, _ = proc.exit_within(20)
        assert code == 0, proc.err()[-3000:]
        assert "Traceback" not in proc.err()
