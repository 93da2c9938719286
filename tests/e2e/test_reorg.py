"""Reorgs on a real node: anvil_reorg, evm_snapshot/evm_revert, finality violations, deep reorgs.

anvil never sends ``removed: true`` logs: every reorg here is found by the scanner itself, by
comparing block hashes and parent hashes with what it stored. Each test has a fresh node.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from scanner.app import App
from scanner.config import Settings
from scanner.devchain import DevChain
from scanner.errors import DeepReorg, UnlinkedCredit
from scanner.scan import catchup
from scanner.scan.operator import rewind_chain
from scanner.testkit.settings import CHAIN, chain_settings
from tests.e2e.actions import pay
from tests.e2e.harness import Harness, stored_cursor
from tests.ops.support import ensure_tokens
from tests.ops.test_backfill import backfill
from tests.support.metrics import sample
from tests.support.wait import until

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20


async def stored_hash(h: Harness, number: int) -> str | None:
    async with h.engine.connect() as conn:
        value = (
            await conn.execute(
                text("SELECT hash FROM blocks WHERE chain = :c AND number = :n"),
                {"c": CHAIN, "n": number},
            )
        ).scalar_one_or_none()
    return None if value is None else str(value)


async def test_anvil_reorg_removing_a_credited_transfer_sends_the_payment_back_to_pending(
    h: Harness,
) -> None:
    pid = await h.create_payment(ALICE, "25.5")
    tx = pay(h, ALICE, 25_500_000)
    block = int(h.chain.wait_receipt(tx)["blockNumber"], 16)
    h.mine(1)
    await h.scan()
    assert await h.status(pid) == "confirming"
    old_hash = await stored_hash(h, block)

    h.chain.reorg(2)  # blocks `block` and `block + 1` replaced; the transfer is dropped
    h.mine(1)
    assert h.chain.receipt(tx) is None
    assert h.scanner is not None
    outcome = await h.scanner.tick()
    assert outcome.reorg
    assert await stored_cursor(h) == block - 1  # rewound to the common ancestor
    await h.scan()  # ... and rescanned
    assert await stored_cursor(h) == h.chain.head()
    new_hash = await stored_hash(h, block)
    assert new_hash is not None and new_hash != old_hash
    assert new_hash == h.chain.block(block)["hash"]

    row = await h.payment(pid)
    assert row["status"] == "pending"
    assert row["amount_received"] == 0
    assert row["confirmations"] == 0 and row["detected_in_block"] is None
    (only,) = await h.transactions(pid)
    assert only["tx_hash"] == tx and only["status"] == "orphaned"
    assert await h.events(pid) == [
        ("transfer_detected", None, None),
        ("status_changed", "pending", "confirming"),
        ("transfer_orphaned", None, None),
        ("status_changed", "confirming", "pending"),
    ]
    assert sample(h.metrics, "scanner_reorgs_total", chain=CHAIN) == 1


async def test_the_same_transaction_re_mined_in_another_block_is_credited_once(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "25.5")
    tx = pay(h, ALICE, 25_500_000)
    block = int(h.chain.wait_receipt(tx)["blockNumber"], 16)
    h.mine(1)
    await h.scan()
    (before,) = await h.transactions(pid)
    assert before["block_number"] == block

    h.chain.reorg(2, [(h.chain.raw_tx(tx), 1)])  # the same signed tx, one block later
    receipt = h.chain.receipt(tx)
    assert receipt is not None and int(receipt["blockNumber"], 16) == block + 1
    h.mine(1)
    await h.scan()

    (after,) = await h.transactions(pid)  # one row for (chain, tx_hash, log_index)
    assert after["tx_hash"] == tx and after["log_index"] == before["log_index"]
    assert after["block_number"] == block + 1
    assert after["block_hash"] == receipt["blockHash"] != before["block_hash"]
    assert after["status"] == "pending" and after["confirmations"] == 2
    row = await h.payment(pid)
    assert row["amount_received"] == Decimal("25.5")
    assert row["status"] == "confirming"
    assert row["detected_in_block"] == block + 1
    assert [e for e in await h.events(pid) if e[0] == "transfer_detected"] == [
        ("transfer_detected", None, None)
    ] * 2
    h.mine(1)
    await h.scan()
    assert await h.status(pid) == "confirmed"
    assert (await h.payment(pid))["amount_received"] == Decimal("25.5")
    async with h.engine.connect() as conn:
        count = (
            await conn.execute(
                text("SELECT count(*) FROM transactions WHERE chain = :c AND tx_hash = :t"),
                {"c": CHAIN, "t": tx},
            )
        ).scalar_one()
    assert count == 1


async def test_a_reorg_at_the_same_height_is_found_without_a_new_block(h: Harness) -> None:
    """anvil_reorg keeps the height: a tick with no new block must still notice that the block
    under the cursor is not the node's any more (confirmations count against it)."""
    pid = await h.create_payment(ALICE, "25.5")
    tx = pay(h, ALICE, 25_500_000)
    h.mine(1)
    await h.scan()
    head = h.chain.head()
    assert await h.status(pid) == "confirming"

    h.chain.reorg(2)
    assert h.chain.head() == head and h.chain.receipt(tx) is None
    await h.scan()
    assert await stored_cursor(h) == head
    assert await stored_hash(h, head) == h.chain.block(head)["hash"]
    assert await h.status(pid) == "pending"
    (only,) = await h.transactions(pid)
    assert only["status"] == "orphaned"
    h.mine(3)
    await h.scan()
    assert await h.status(pid) == "pending"


async def test_snapshot_and_revert_is_found_by_hash(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "10")
    other = await h.create_payment(BOB, "1")
    snap = h.chain.snapshot()
    tx = pay(h, ALICE, 10_000_000)
    h.mine(1)
    await h.scan()
    assert await h.status(pid) == "confirming"
    cursor = await stored_cursor(h)

    assert h.chain.revert(snap)
    pay(h, BOB, 1_000_000)  # a different history at the same heights
    h.mine(2)
    assert h.chain.receipt(tx) is None
    await h.scan()

    assert await stored_cursor(h) == h.chain.head() > cursor
    assert await h.status(pid) == "pending"
    (orphaned,) = await h.transactions(pid)
    assert orphaned["status"] == "orphaned"
    assert ("transfer_orphaned", None, None) in await h.events(pid)
    row = await h.payment(other)  # the new history's transfer, three blocks deep: final
    assert row["status"] == "confirmed" and row["confirmations"] == 3
    assert row["amount_received"] == Decimal("1")
    assert sample(h.metrics, "scanner_reorgs_total", chain=CHAIN) == 1


async def test_a_reorg_deeper_than_the_confirmations_is_a_loud_finality_violation(
    h: Harness,
) -> None:
    with capture_logs() as logs:
        pid = await h.create_payment(ALICE, "25.5")
        tx = pay(h, ALICE, 25_500_000)
        h.mine(3)
        await h.scan()
        assert await h.status(pid) == "confirmed"

        h.chain.reorg(5)  # deeper than confirmations (3), within max_reorg_depth (64)
        h.mine(1)
        await h.scan()

    row = await h.payment(pid)
    assert row["status"] == "confirmed"
    assert row["amount_received"] == 0
    (orphaned,) = await h.transactions(pid)
    assert orphaned["tx_hash"] == tx and orphaned["status"] == "orphaned"
    events = await h.events(pid)
    assert events[-2:] == [("transfer_orphaned", None, None), ("confirmed_reverted", None, None)]
    violations = [e for e in logs if e["event"] == "finality_violation"]
    assert len(violations) == 1 and violations[0]["log_level"] == "error"
    assert violations[0]["payment_id"] == pid
    assert sample(h.metrics, "scanner_finality_violations_total", chain=CHAIN) == 1
    assert await stored_cursor(h) == h.chain.head()


# ---------------------------------------------------------------------------------- deep reorg


def app_settings(settings: Settings, *chains: object) -> Settings:
    return settings.model_copy(
        update={
            "chains": list(chains),
            "metrics": settings.metrics.model_copy(update={"enabled": False}),
            "shutdown_timeout": 5.0,
        }
    )


async def test_a_reorg_deeper_than_max_reorg_depth_halts_only_that_chain(
    h: Harness, anvil2: DevChain
) -> None:
    deep = chain_settings(
        h.chain.url,
        [("USDT", h.token, 6)],
        confirmations=2,
        max_reorg_depth=3,
        poll_interval=0.02,
    )
    token2 = anvil2.deploy_token("Tether USD", "USDT", 6)
    other = chain_settings(anvil2.url, [("USDT", token2, 6)], name="other", poll_interval=0.02)
    h.mine(6)
    app = App(app_settings(h.settings, deep, other), environ={})
    task = asyncio.create_task(app.run())
    try:
        await until(lambda: _chain(app, CHAIN).get("ticks", 0) > 0)
        head = h.chain.head()
        await until(lambda: _cursor(app, CHAIN) == head and _cursor(app, "other") is not None)

        h.chain.reorg(5)  # deeper than max_reorg_depth = 3
        h.mine(1)
        await until(lambda: bool(_chain(app, CHAIN)["halted"]))
        assert "max_reorg_depth=3" in _chain(app, CHAIN)["halt_reason"]
        assert sample(app.metrics, "scanner_chain_halted", chain=CHAIN) == 1
        assert sample(app.metrics, "scanner_chain_halted", chain="other") == 0
        assert await stored_cursor(h) == head  # nothing rewound, nothing orphaned

        h.mine(2)  # the halted chain is not retried ...
        anvil2.mine(3)  # ... while the other chain keeps scanning
        target = anvil2.head()
        await until(lambda: (_cursor(app, "other") or -1) >= target)
        assert await stored_cursor(h) == head
        assert _chain(app, CHAIN)["halted"]
        assert not task.done()
    finally:
        app.stop.set()
        assert await asyncio.wait_for(task, 10) == 0


def _chain(app: App, name: str) -> dict[str, Any]:
    """The chain's health; empty while the App is starting and has not registered it."""
    chains: dict[str, dict[str, Any]] = app.health.healthy()[1]["chains"]
    return chains.get(name, {})


def _cursor(app: App, name: str) -> int | None:
    value = _chain(app, name).get("cursor")
    return value if isinstance(value, int) else None


async def test_a_reorg_below_a_fresh_start_rescans_instead_of_halting(h: Harness) -> None:
    """A chain that started scanning at the head has less stored history than the reorg window:
    a reorg that replaces its first stored block rewinds below it and rescans (nothing was
    credited there), rather than halting as if the reorg were deeper than max_reorg_depth."""
    h.chain_settings = h.chain_settings.model_copy(update={"start_block": None})
    pid = await h.create_payment(ALICE, "3")
    assert h.scanner is not None
    started_at = h.scanner.cursor
    pay(h, ALICE, 3_000_000)
    await h.scan()
    assert await h.status(pid) == "confirming"
    depth = h.chain.head() - started_at + 2  # replaces the block the scan started at
    h.chain.reorg(depth)
    await h.scan()
    assert h.scanner.cursor == h.chain.head()
    row = await h.payment(pid)
    assert row["status"] == "pending" and row["amount_received"] == 0
    (tx,) = await h.transactions(pid)
    assert tx["status"] == "orphaned"


async def test_a_reorg_below_a_fresh_start_halts_when_a_backfill_credited_below_it(
    h: Harness,
) -> None:
    """A backfill ran before the first live scan: its credit lies below the live scan's first
    stored block, where no stored hash tells whether the reorg replaced it. The chain halts (as
    for a reorg deeper than max_reorg_depth) instead of keeping that credit; the operator's
    rewind below it then orphans it."""
    h.chain_settings = h.chain_settings.model_copy(update={"start_block": None})
    await ensure_tokens(h.sessions, h.chain_settings)
    h.scanner = h.make_scanner()  # not started yet: the gateway's rows come first
    pid = await h.create_payment(ALICE, "3")
    tx = pay(h, ALICE, 3_000_000)
    block = int(h.chain.wait_receipt(tx)["blockNumber"], 16)
    h.mine(1)
    await backfill(h.chain_settings, h.sessions, 0, h.chain.head())
    assert await h.status(pid) == "confirming"
    await h.scanner.prepare()  # the first live scan starts at the head: one stored block
    assert h.scanner.cursor == block + 1

    h.chain.reorg(3)  # replaces the backfill's block (the transfer is dropped) and the start
    with pytest.raises(DeepReorg):
        await h.scan()
    assert await stored_cursor(h) == block + 1  # nothing rewound ...
    (row,) = await h.transactions(pid)
    assert row["status"] == "pending"  # ... nothing confirmed either

    await rewind_chain(h.chain_settings, h.scanner.reader, h.sessions, block - 2)
    await h.scan()
    payment = await h.payment(pid)
    assert payment["status"] == "pending" and payment["amount_received"] == 0
    (row,) = await h.transactions(pid)
    assert row["status"] == "orphaned"


async def _backfilled_then_replaced(h: Harness, *, again_at: int | None = None) -> tuple[str, str]:
    """Before any live scan, a backfill to the head credits a transfer (not final yet); then a
    reorg replaces its block without it (``again_at``: the transfer mined again, that many
    blocks into the new branch). The payment's id and the transfer's transaction."""
    h.chain_settings = h.chain_settings.model_copy(update={"start_block": None})
    await ensure_tokens(h.sessions, h.chain_settings)
    h.scanner = h.make_scanner()  # not started: no live cursor
    pid = await h.create_payment(ALICE, "3")
    tx = pay(h, ALICE, 3_000_000)
    raw = h.chain.raw_tx(tx)
    h.mine(1)
    await backfill(h.chain_settings, h.sessions, 0, h.chain.head())
    assert await h.status(pid) == "confirming"
    h.chain.reorg(3, [] if again_at is None else [(raw, again_at)])
    assert (h.chain.receipt(tx) is None) == (again_at is None)
    h.mine(2)
    return pid, tx


async def test_a_second_backfill_never_finalizes_a_credit_whose_block_is_gone(
    h: Harness,
) -> None:
    """No live scan: a backfill's credit near the head it read, then a reorg replaced its block.
    A second backfill above the first one links nothing below its own reads: the node no longer
    shows the credit's block, so the payment is not confirmed on money that is gone."""
    gone, _ = await _backfilled_then_replaced(h)
    inside = await h.create_payment(BOB, "4")
    start = h.chain.head() + 1
    pay(h, BOB, 4_000_000)
    h.mine(5)
    end = h.chain.head()
    h.mine(70)  # far below the head: the second backfill's own reads are final

    await backfill(h.chain_settings, h.sessions, start, end)

    assert await h.status(gone) == "confirming"
    (credit,) = await h.transactions(gone)
    assert credit["status"] == "pending"
    assert await h.status(inside) == "confirming"  # its range counts no block as checked


async def test_a_second_backfill_finalizes_a_credit_whose_block_the_node_still_shows(
    h: Harness,
) -> None:
    """The same with no reorg: the node shows the credit's block, hash for hash, so the second
    backfill confirms it and its own."""
    h.chain_settings = h.chain_settings.model_copy(update={"start_block": None})
    await ensure_tokens(h.sessions, h.chain_settings)
    h.scanner = h.make_scanner()
    kept = await h.create_payment(ALICE, "3")
    pay(h, ALICE, 3_000_000)
    h.mine(1)
    await backfill(h.chain_settings, h.sessions, 0, h.chain.head())
    assert await h.status(kept) == "confirming"
    inside = await h.create_payment(BOB, "4")
    start = h.chain.head() + 1
    pay(h, BOB, 4_000_000)
    h.mine(5)

    await backfill(h.chain_settings, h.sessions, start, h.chain.head())

    assert await h.status(kept) == "confirmed"
    assert await h.status(inside) == "confirmed"


@pytest.mark.parametrize("again_at", [None, 0])
async def test_a_fresh_start_halts_on_a_backfills_credit_in_a_replaced_block(
    h: Harness, again_at: int | None
) -> None:
    """No live scan when a backfill credited a transfer near the head; a reorg then replaced
    its block (the transfer dropped, or mined again in the new branch's first block, below the
    credit's). The first live scan would count that credit from its first block up, with no
    stored hash to link it: the chain halts instead, on every start, and confirms nothing; the
    operator's rewind below the credit orphans it and credits the transfer where it now is."""
    pid, tx = await _backfilled_then_replaced(h, again_at=again_at)
    (credit,) = await h.transactions(pid)
    block = credit["block_number"]
    scanner = h.scanner
    assert scanner is not None

    for _ in range(2):  # a restart finds the same
        with pytest.raises(UnlinkedCredit) as halted:
            await scanner.prepare()
        assert halted.value.block == block
        assert f"--to-block {block - 1}" in str(halted.value)
    assert await h.status(pid) == "confirming"
    (credit,) = await h.transactions(pid)
    assert credit["status"] == "pending"

    await rewind_chain(h.chain_settings, scanner.reader, h.sessions, block - 2)
    await scanner.prepare()
    await h.scan()
    h.mine(3)
    await h.scan()

    payment = await h.payment(pid)
    (credit,) = await h.transactions(pid)
    if again_at is None:
        assert credit["status"] == "orphaned"
        assert payment["status"] == "pending" and payment["amount_received"] == 0
    else:
        receipt = h.chain.receipt(tx)
        assert receipt is not None
        assert credit["block_hash"] == receipt["blockHash"] and credit["status"] == "confirmed"
        assert payment["status"] == "confirmed" and payment["amount_received"] == 3
    assert "confirmed_reverted" not in [e[0] for e in await h.events(pid)]


async def test_scanner_run_halts_that_chain_on_a_backfills_credit_in_a_replaced_block(
    h: Harness,
) -> None:
    """The same through ``scanner run``'s App: the chain is halted (health, metric, the rewind
    named in the reason), not retried, and nothing is confirmed; the App goes on."""
    pid, _ = await _backfilled_then_replaced(h)
    (credit,) = await h.transactions(pid)
    app = App(app_settings(h.settings, h.chain_settings), environ={})
    task = asyncio.create_task(app.run())
    try:
        await until(lambda: bool(_chain(app, CHAIN).get("halted")))
        reason = _chain(app, CHAIN)["halt_reason"]
        assert f"--to-block {credit['block_number'] - 1}" in reason, reason
        assert sample(app.metrics, "scanner_chain_halted", chain=CHAIN) == 1
        h.mine(5)
        await asyncio.sleep(0.5)  # ticks would have counted the credit by now
        assert await h.status(pid) == "confirming"
        (credit,) = await h.transactions(pid)
        assert credit["status"] == "pending"
        assert not task.done()
    finally:
        app.stop.set()
        assert await asyncio.wait_for(task, 10) == 0


async def test_a_reorg_orphans_the_credit_of_a_payment_left_alone(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A payment is left alone while one of its credit rows is unreadable (edited by hand); a
    reorg that drops another of its credits meanwhile still orphans that credit's row. Were it
    left pending, it would be counted final by depth once the row is fixed: money never
    received. Once fixed, the look-back recomputes the payment from its rows."""
    monkeypatch.setattr(catchup, "LEFT_ALONE_RETRY", 0.0)  # looked back for on every pass
    pid = await h.create_payment(ALICE, "10")
    first = pay(h, ALICE, 4_000_000)
    h.mine(3)
    await h.scan()
    dropped = pay(h, ALICE, 6_000_000)
    await h.scan()
    assert await h.status(pid) == "confirming"
    async with h.engine.begin() as conn:
        await conn.execute(
            text("UPDATE transactions SET value = 'NaN' WHERE tx_hash = :tx"), {"tx": first}
        )
    h.chain.reorg(1)  # the second transfer's block replaced without it
    h.mine(1)
    assert h.chain.receipt(dropped) is None
    with capture_logs() as logs:
        await h.scan()
        h.mine(5)
        await h.scan()
    assert "credit_orphaned_unloaded" in [e["event"] for e in logs]
    async with h.engine.connect() as conn:
        status = text("SELECT status FROM transactions WHERE tx_hash = :tx")
        assert (await conn.execute(status, {"tx": dropped})).scalar_one() == "orphaned"
    async with h.engine.begin() as conn:  # the row is fixed
        await conn.execute(
            text("UPDATE transactions SET value = '4000000' WHERE tx_hash = :tx"), {"tx": first}
        )
    h.mine(1)
    await h.scan()  # looked back for once fixed: recomputed from its rows
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("4"))
    assert "confirmed" not in [e[2] for e in await h.events(pid)]
