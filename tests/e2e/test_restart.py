"""A restart in the middle of a run ends in the rows of a run without one.

A real ``scanner run`` subprocess reads through a proxy that holds one ``eth_getLogs`` call in the
middle of the chain; the process is killed with SIGKILL while it waits there (on PostgreSQL it is
started and killed once more, inside the open database transaction of that range), then started
again and left to reach the head. An uninterrupted in-process scan of the same node into a second
database must give the same payments, transactions, events, blocks and cursor (ids and
wall-clock columns aside).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from scanner.db.locks import EVENTS_LOCK_KEY
from scanner.db.models import Base
from scanner.scan.live import ChainScanner
from scanner.testkit.settings import CHAIN, SCENARIO
from tests.e2e.actions import mined, pay
from tests.e2e.harness import Harness
from tests.support.proxy import ThreadedProxy
from tests.support.wait import until

REPO = Path(__file__).resolve().parents[2]
BATCH = 5
RUN_WINDOW = 3  # max_reorg_depth of the run: ranges below it read by number, one getLogs each
WINDOW = 64  # max_reorg_depth of the scenario's chain (3 confirmations: the default)
# Bookkeeping of when, not of what: seen_at_block is the cursor at the moment the look at a
# row ran, and the look runs beside the scan.
WALL_CLOCK = {"created_at", "updated_at", "scanner_rev", "seen_at_block"}

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
CAROL = "0x" + "c3" * 20
DAVE = "0x" + "d4" * 20
EVE = "0x" + "e5" * 20
FRANK = "0x" + "f6" * 20


def config_file(tmp_path: Path, rpc_url: str, h: Harness) -> Path:
    path = tmp_path / "scanner.toml"
    path.write_text(
        f"""
shutdown_timeout = 5.0

[metrics]
enabled = false

[logging]
level = "info"
format = "json"

[[chains]]
name = "{CHAIN}"
chain_id = 31337
rpc_urls = ["{rpc_url}"]
confirmations = 3
max_reorg_depth = {RUN_WINDOW}
poll_interval = 0.05
batch_size = {BATCH}
concurrency = 1
start_block = 0
rpc_max_attempts = 3
sweep = false  # a sweep reading the held range would be held too (restarts: test_sweep.py)

[[chains.tokens]]
symbol = "USDT"
address = "{h.token}"
decimals = 6

[[chains.tokens]]
symbol = "DAI"
address = "{h.token18}"
decimals = 18
"""
    )
    return path


def start_scanner(config: Path, db_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "ENV": "testing",
        "DATABASE_URL_DEV": db_url,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "scanner", "run", "--config", str(config)],
            cwd=config.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def tail(log: Path) -> str:
    """The end of the subprocess's log, for assertion messages."""
    return log.read_text()[-3000:]


def _reads_from(item: dict[str, Any], first_block: str) -> bool:
    """Whether a JSON-RPC item is an ``eth_getLogs`` read from ``first_block`` (the look at
    unseen payments reads from block 0, and only sometimes before the live ranges)."""
    params = item.get("params") or [{}]
    return isinstance(params[0], dict) and params[0].get("fromBlock") == first_block


def _at(engine: AsyncEngine, block: int) -> Any:
    async def check() -> bool:
        return await cursor_of(engine) == block

    return check


async def cursor_of(engine: AsyncEngine) -> int | None:
    async with engine.connect() as conn:
        value = (
            await conn.execute(
                text("SELECT last_scanned_block FROM chain_states WHERE chain = :c"), {"c": CHAIN}
            )
        ).scalar_one_or_none()
    return None if value is None else int(value)


async def wait_for_cursor(
    engine: AsyncEngine, block: int, process: subprocess.Popen[bytes], log: Path
) -> None:
    """Poll the database until the subprocess has scanned up to ``block``."""

    async def scanned() -> bool:
        assert process.poll() is None, tail(log)
        return (await cursor_of(engine) or -1) >= block

    await until(scanned, 15, f"block {block} scanned", 0.05, detail=lambda: tail(log))


def build_history(h: Harness, ids: dict[str, str]) -> list[int]:
    """Payments of every kind spread over ~80 blocks; returns the blocks that carry transfers."""
    blocks = []

    def at(tx: str) -> None:
        blocks.append(int(h.chain.wait_receipt(tx)["blockNumber"], 16))

    at(pay(h, ALICE, 10_000_000))  # exact
    h.mine(4)
    at(pay(h, BOB, 2_000_000))  # partial ...
    h.mine(6)
    at(pay(h, CAROL, 2 * 10**18, token=h.token18))  # overpaid
    at(pay(h, DAVE, 1_000_000))  # underpaid, still open
    h.mine(9)
    at(pay(h, BOB, 3_000_000))  # ... completed
    h.mine(3)
    at(mined(h, h.chain.batch_transfer(h.token, h.customer, [FRANK, ALICE], [4_000_000, 1])))
    h.mine(7)
    h.chain.increase_time(400)  # EVE's payment expires ...
    h.mine(6)
    at(pay(h, EVE, 3_000_000))  # ... and is paid late
    h.mine(30)
    return blocks


async def kill_inside_a_transaction(
    engine: AsyncEngine, config: Path, db_url: str, log: Path
) -> None:
    """PostgreSQL: stop a batch inside its database transaction, after it wrote transactions and
    payments and before its commit, by holding the events lock it takes there; SIGKILL it."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'"
    )
    async with engine.connect() as holder:
        await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": EVENTS_LOCK_KEY})
        await holder.commit()
        process = start_scanner(config, db_url, log)
        try:

            async def blocked() -> bool:
                count = (await holder.execute(waiting)).scalar_one()
                await holder.commit()
                assert process.poll() is None, tail(log)
                return bool(count)

            await until(blocked, 15, "the batch waits for the lock", 0.05, detail=lambda: tail(log))
            os.kill(process.pid, signal.SIGKILL)
            assert process.wait(10) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": EVENTS_LOCK_KEY})
            await holder.commit()


async def copy_gateway_rows(source: AsyncEngine, target: AsyncEngine) -> None:
    """What the gateway wrote (tokens, payments), as it is, into the other database."""
    async with source.connect() as src, target.begin() as dst:
        for name in ("tokens", "payments"):
            table = Base.metadata.tables[name]
            rows = [dict(r) for r in (await src.execute(select(table))).mappings()]
            await dst.execute(insert(table), rows)


async def snapshot(engine: AsyncEngine) -> dict[str, Any]:
    """Every row the scanner writes, without ids and wall-clock columns."""

    async def rows(name: str, order: str, drop: set[str]) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            result = await conn.execute(text(f"SELECT * FROM {name} ORDER BY {order}"))
            return [{k: v for k, v in r.items() if k not in drop} for r in result.mappings()]

    events: dict[str, list[dict[str, Any]]] = {}
    for event in await rows("payment_events", "id", {"id", *WALL_CLOCK}):
        events.setdefault(str(event["payment_id"]), []).append(event)
    return {
        "payments": await rows("payments", "id", WALL_CLOCK),
        "transactions": await rows("transactions", "tx_hash, log_index", {"id", *WALL_CLOCK}),
        "events": events,
        "blocks": await rows("blocks", "chain, number", set()),
        "chain_states": await rows("chain_states", "chain", {"id", *WALL_CLOCK}),
    }


async def test_a_restart_mid_run_ends_in_the_rows_of_an_uninterrupted_run(
    h: Harness, other_engine: AsyncEngine, other_db_url: str, tmp_path: Path
) -> None:
    ids = {
        ALICE: await h.create_payment(ALICE, "10"),
        BOB: await h.create_payment(BOB, "5"),
        CAROL: await h.create_payment(CAROL, "1", token=h.token18),
        DAVE: await h.create_payment(DAVE, "7"),
        EVE: await h.create_payment(EVE, "3", expires_in=200),
        FRANK: await h.create_payment(FRANK, "4"),
    }
    paid_at = build_history(h, ids)
    head = h.chain.head()
    await copy_gateway_rows(h.engine, other_engine)

    # The interrupted run: killed while it waits for the logs of the range holding BOB's second
    # transfer, then started again.
    held_range = paid_at[4] // BATCH  # ranges are 0-4, 5-9, ...: one getLogs each, far from head
    assert head - (held_range * BATCH + BATCH - 1) >= RUN_WINDOW
    log = tmp_path / "scanner.log"
    with ThreadedProxy(h.chain.url) as tp:
        first_block = hex(held_range * BATCH)  # only the live scan's read of that range
        gate = tp.proxy.hold("eth_getLogs", where=lambda item: _reads_from(item, first_block))
        config = config_file(tmp_path, tp.url, h)
        first = start_scanner(config, other_db_url, log)
        try:
            assert gate.wait_reached_sync(20), tail(log)
            # ranges are read ahead of their commits: the ones before it commit meanwhile
            await until(
                _at(other_engine, held_range * BATCH - 1),
                what="the ranges before the held one committed",
                detail=lambda: tail(log),
            )
            os.kill(first.pid, signal.SIGKILL)
            assert first.wait(10) == -signal.SIGKILL
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        interrupted_at = await cursor_of(other_engine)
        assert interrupted_at == held_range * BATCH - 1  # every range before it committed
        async with other_engine.connect() as conn:
            partial = (await conn.execute(text("SELECT count(*) FROM transactions"))).scalar_one()
        assert 0 < partial < len(paid_at) + 1  # some transfers stored, not all

        tp.proxy.reset()
        if other_engine.dialect.name == "postgresql":
            await kill_inside_a_transaction(other_engine, config, other_db_url, log)
            assert await cursor_of(other_engine) == interrupted_at
        second = start_scanner(config, other_db_url, log)
        try:
            await wait_for_cursor(other_engine, head, second, log)
            second.send_signal(signal.SIGTERM)
            assert second.wait(10) == 0, tail(log)
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()

    # The uninterrupted run, in-process, over the same node into h's database.
    assert h.scanner is not None
    await h.scanner.reader.client.aclose()
    async with h.engine.begin() as conn:  # forget the scan that only inserted the tokens
        await conn.execute(text("DELETE FROM blocks"))
        await conn.execute(text("DELETE FROM chain_states"))
    h.scanner = h.make_scanner(batch_size=BATCH, concurrency=1, max_reorg_depth=RUN_WINDOW)
    scanner: ChainScanner = h.scanner
    await scanner.prepare()
    await scanner.scan_until_head()
    assert await cursor_of(h.engine) == head

    interrupted, uninterrupted = await snapshot(other_engine), await snapshot(h.engine)
    assert interrupted == uninterrupted
    statuses = {row["address"]: row["status"] for row in uninterrupted["payments"]}
    assert statuses == {
        ALICE: "confirmed",
        BOB: "confirmed",
        CAROL: "confirmed",
        DAVE: "pending",
        EVE: "expired",
        FRANK: "confirmed",
    }
    assert len(uninterrupted["transactions"]) == len(paid_at) + 1  # the batch paid two
    assert any(e["type"] == "paid_late" for e in uninterrupted["events"][str(ids[EVE])])


@pytest.mark.parametrize("outage", [1, WINDOW + SCENARIO["batch_size"] + 10])
async def test_a_reorg_while_the_scanner_was_stopped_is_found_at_start(
    h: Harness, outage: int
) -> None:
    """However long the scanner was stopped: after more than the reorg window and a batch, the
    first range is read far below the head, without a header per block, and is still linked to
    the stored blocks."""
    pid = await h.create_payment(ALICE, "10")
    tx = pay(h, ALICE, 10_000_000)
    h.mine(1)
    await h.scan()
    assert await h.status(pid) == "confirming"
    await h.close()  # the process stops ...

    h.chain.reorg(3, [(h.chain.raw_tx(tx), 2)])  # ... the chain reorgs meanwhile ...
    h.mine(outage)
    h.scanner = h.make_scanner()  # ... and a new process starts from the stored cursor
    await h.scanner.prepare()
    await h.scanner.scan_until_head()

    moved_to = int(h.chain.wait_receipt(tx)["blockNumber"], 16)
    (row,) = await h.transactions(pid)
    final = outage > 1  # the re-mined transfer is final by then
    assert row["block_number"] == moved_to
    assert row["status"] == ("confirmed" if final else "pending")
    assert row["block_hash"] == h.chain.block(moved_to)["hash"]
    payment = await h.payment(pid)
    assert payment["status"] == ("confirmed" if final else "confirming")
    assert payment["confirmations"] == (3 if final else 2)
    assert [e[0] for e in await h.events(pid)] == [
        "transfer_detected",
        "status_changed",
        "transfer_orphaned",
        "status_changed",
        "transfer_detected",
        "status_changed",
        *(["status_changed"] if final else []),
    ]
