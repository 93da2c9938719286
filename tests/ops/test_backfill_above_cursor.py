"""A backfill over blocks above the live cursor, while the live scan has not reached them (it
was stopped, or is catching up after an outage): the blocks between the cursor and the
backfill's first block are nobody's yet, so what a payment received there is unknown to the
backfill. It credits what its range holds and leaves a payment's expiry to the live scan."""

from __future__ import annotations

import pytest

from tests.e2e.actions import pay
from tests.e2e.harness import Harness, stored_cursor
from tests.ops.test_backfill import backfill, small

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
DEEP = 70  # blocks: more than the reorg window (max_reorg_depth, 64 here)


async def test_a_backfill_above_the_live_cursor_expires_nothing_paid_below_its_range(
    h: Harness,
) -> None:
    paid_below = await h.create_payment(ALICE, "10", expires_in=100)
    paid_inside = await h.create_payment(BOB, "4", expires_in=100)
    unpaid = await h.create_payment("0x" + "c3" * 20, "5", expires_in=100)
    await h.scan()
    live_at = await stored_cursor(h)
    pay(h, ALICE, 10_000_000)  # in time, in a block the live scan has not read
    h.mine(2)
    start = h.chain.head() + 1
    pay(h, BOB, 4_000_000)  # in time, inside the backfill's range
    h.chain.increase_time(200)  # every expiry passes ...
    h.mine(10)  # ... and its first block is final
    end = h.chain.head()
    h.mine(DEEP)  # the range is far below the head: the backfill's own reads are final
    assert live_at < start - 1

    summary = await backfill(small(h), h.sessions, start, end)

    assert summary.status_changes.get("expired") is None
    assert await h.status(paid_below) == "pending"  # not expired on what the backfill saw
    assert await h.status(paid_inside) == "confirmed"
    await h.scan()  # the live scan reads the blocks below the backfill's range
    assert await h.status(paid_below) == "confirmed"
    assert (await h.payment(paid_below))["amount_received"] == 10
    assert await h.status(unpaid) == "expired"
    assert await h.status(paid_inside) == "confirmed"


async def test_a_reorg_below_a_backfill_leaves_the_backfills_credits_on_the_chain_alone(
    h: Harness,
) -> None:
    """The live scan walks back from a reorg at its cursor: what it undoes is the blocks it had
    stored. A backfill's credits above the cursor were read from the chain as it is now; the
    live scan judges them by hash when it gets there, and orphans nothing that stayed."""
    paid = await h.create_payment(ALICE, "10")
    h.mine(3)  # (the reorg below replaces empty blocks only)
    await h.scan()
    live_at = await stored_cursor(h)
    assert live_at == h.chain.head()
    h.chain.reorg(2)  # the live scan's two newest blocks are replaced ...
    h.mine(3)
    start = h.chain.head() + 1
    pay(h, ALICE, 10_000_000)  # ... and a transfer lands above them, where a backfill reads
    h.mine(5)
    await backfill(small(h), h.sessions, start, h.chain.head())
    assert await h.status(paid) == "confirming"

    await h.scan()  # finds the reorg at its cursor, walks back, scans on

    assert await h.status(paid) == "confirmed"
    assert [e[0] for e in await h.events(paid)] == [
        "transfer_detected",
        "status_changed",
        "status_changed",
    ]
    (row,) = await h.transactions(paid)
    assert row["status"] == "confirmed"


async def test_a_backfill_above_a_stopped_live_scan_never_finalizes_a_credit_it_did_not_link(
    h: Harness,
) -> None:
    """The live scan credited a transfer and stopped; a reorg then replaced the transfer's
    block without it, unseen. A backfill far above the live cursor reads its own range only:
    the credit below it is no more final on the backfill's word than on the live scan's (the
    payment is not confirmed on money that is gone), and the live scan, back, orphans it."""
    gone = await h.create_payment(ALICE, "10")
    inside = await h.create_payment(BOB, "4")
    await h.scan()
    tx = pay(h, ALICE, 10_000_000)
    await h.scan()
    assert await h.status(gone) == "confirming"
    live_at = await stored_cursor(h)
    h.chain.reorg(1)  # the transfer's block, replaced without it
    assert h.chain.receipt(tx) is None
    h.mine(3)
    start = h.chain.head() + 1
    pay(h, BOB, 4_000_000)
    h.mine(5)
    end = h.chain.head()
    h.mine(DEEP)  # the range is far below the head: the backfill's own reads are final
    assert live_at < start - 1

    await backfill(small(h), h.sessions, start, end)

    assert await h.status(gone) == "confirming"  # as the live scan left it, never confirmed
    (credit,) = await h.transactions(gone)
    assert credit["status"] == "pending"
    assert await h.status(inside) == "confirming"  # credited; final once the live scan links it
    await h.scan()  # finds the reorg at its cursor, orphans the credit, scans on
    payment = await h.payment(gone)
    assert payment["status"] == "pending" and payment["amount_received"] == 0
    kinds = [e[0] for e in await h.events(gone)]
    assert "confirmed_reverted" not in kinds and kinds[-1] == "status_changed"
    assert await h.status(inside) == "confirmed"


async def test_a_transfer_in_the_range_to_that_payment_does_not_finalize_its_old_credit(
    h: Harness,
) -> None:
    """The same, the payment paid again inside the backfill's range: each block's transfers
    are judged as of the block before them, and that is never past the live cursor here."""
    gone = await h.create_payment(ALICE, "10")
    await h.scan()
    pay(h, ALICE, 10_000_000)
    await h.scan()
    h.chain.reorg(1)  # the transfer's block, replaced without it
    h.mine(3)
    start = h.chain.head() + 1
    h.mine(20)  # past the confirmations: as of the next block, the old credit would be final
    pay(h, ALICE, 1_000_000)
    end = h.chain.head()
    h.mine(DEEP)

    await backfill(small(h), h.sessions, start, end)

    assert await h.status(gone) == "confirming"
    await h.scan()
    payment = await h.payment(gone)
    assert payment["status"] == "pending" and payment["amount_received"] == 1
    assert "confirmed_reverted" not in [e[0] for e in await h.events(gone)]


@pytest.mark.parametrize("reader", ["live scan", "backfill"])
async def test_a_backfills_credit_in_a_replaced_block_is_orphaned_when_read_again_far_below(
    h: Harness, reader: str
) -> None:
    """The live scan stopped; a backfill above its cursor credited a transfer near the head;
    a reorg then replaced that block without it, and the head moved far on. The live scan
    back (or a second backfill of the same blocks) reads them far below the head, without a
    header per block: the credit's block is judged all the same, so the payment is not
    confirmed on money that is gone."""
    gone = await h.create_payment(ALICE, "10")
    await h.scan()
    h.mine(3)
    start = h.chain.head() + 1
    h.mine(2)
    tx = pay(h, ALICE, 10_000_000)
    h.mine(1)
    end = h.chain.head()
    await backfill(small(h), h.sessions, start, end)
    assert await h.status(gone) == "confirming"
    h.chain.reorg(2)  # the transfer's block, replaced without it
    assert h.chain.receipt(tx) is None
    h.mine(4 * DEEP)  # the blocks are far below the head when they are read again

    if reader == "backfill":  # the credit's block inside one of its ranges, not at an edge
        await backfill(h.chain_settings, h.sessions, start, end + 10)
        (credit,) = await h.transactions(gone)
        assert credit["status"] == "orphaned"  # by the backfill, before the live scan is back
    await h.scan()

    payment = await h.payment(gone)
    assert payment["status"] == "pending" and payment["amount_received"] == 0
    (credit,) = await h.transactions(gone)
    assert credit["status"] == "orphaned"
    assert "confirmed_reverted" not in [e[0] for e in await h.events(gone)]
