"""A reorg during an outage is found when the scanner comes back, however long the outage.

The scanner credits a transfer in its newest block; while it is stopped (a restart) or cut off
from its node (every request fails), that block is replaced without the transfer and the chain
moves on: one block, or more than the reorg window and a batch (then the first range after the
outage is far below the head, read without a header per block). Either way the stored blocks are
checked against the node before anything above them is trusted: the transfer is orphaned, the
payment goes back to ``pending``, and the reorg is recorded.
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from scanner.errors import RpcError
from scanner.testkit.settings import CHAIN, SCENARIO
from tests.e2e.actions import pay
from tests.e2e.harness import Harness, stored_cursor
from tests.e2e.test_faults import scan_through
from tests.support.metrics import sample
from tests.support.proxy import FaultProxy

ALICE = "0x" + "a1" * 20
WINDOW = 64  # max_reorg_depth of the scenario's chain (3 confirmations: the default, 64)
OUTAGES = [1, WINDOW + SCENARIO["batch_size"] + 30]


async def credited_in_the_newest_block(h: Harness) -> tuple[str, str, int]:
    """A payment paid in full in the block the scanner stopped at: ``confirming``."""
    pid = await h.create_payment(ALICE, "10")
    tx = pay(h, ALICE, 10_000_000)
    await h.scan()
    block = int(h.chain.wait_receipt(tx)["blockNumber"], 16)
    assert await stored_cursor(h) == block and await h.status(pid) == "confirming"
    return pid, tx, block


async def assert_orphaned(h: Harness, pid: str, tx: str) -> None:
    """The dropped transfer is orphaned, the payment back to pending with nothing received."""
    assert h.chain.receipt(tx) is None
    assert await stored_cursor(h) == h.chain.head()
    payment = await h.payment(pid)
    assert payment["status"] == "pending" and payment["amount_received"] == 0
    (row,) = await h.transactions(pid)
    assert row["status"] == "orphaned"
    assert await h.events(pid) == [
        ("transfer_detected", None, None),
        ("status_changed", "pending", "confirming"),
        ("transfer_orphaned", None, None),
        ("status_changed", "confirming", "pending"),
    ]
    assert sample(h.metrics, "scanner_reorgs_total", chain=CHAIN) == 1


@pytest.mark.parametrize("outage", OUTAGES)
async def test_a_transfer_reorged_away_while_the_scanner_was_stopped_is_orphaned_at_start(
    h: Harness, outage: int
) -> None:
    pid, tx, block = await credited_in_the_newest_block(h)
    await h.close()  # the process stops ...

    h.chain.reorg(1)  # ... its newest block is replaced without the transfer ...
    h.mine(outage - 1)  # ... and the chain moves on
    h.scanner = h.make_scanner()  # a new process, from the stored cursor
    await h.scanner.prepare()
    with capture_logs() as logs:
        await h.scanner.scan_until_head()

    await assert_orphaned(h, pid, tx)
    (reorg,) = [e for e in logs if e["event"] == "reorg_detected"]
    assert reorg["old_cursor"] == block and reorg["ancestor"] == block - 1


@pytest.mark.parametrize("outage", OUTAGES)
async def test_a_reorg_while_the_node_was_unreachable_is_found_when_it_answers_again(
    h: Harness, outage: int
) -> None:
    async with FaultProxy(h.chain.url) as proxy:
        await h.scan()  # the tokens' rows
        scanner = await scan_through(h, proxy.url)
        pid, tx, block = await credited_in_the_newest_block(h)

        proxy.fail_http("*", 503)  # the node is cut off ...
        with pytest.raises(RpcError):
            await scanner.tick()
        h.chain.reorg(1)  # ... while the block is replaced and the chain moves on
        h.mine(outage - 1)
        proxy.reset()  # the node answers again, to the same running scanner
        with capture_logs() as logs:
            await scanner.scan_until_head()

    await assert_orphaned(h, pid, tx)
    (reorg,) = [e for e in logs if e["event"] == "reorg_detected"]
    assert reorg["old_cursor"] == block and reorg["ancestor"] == block - 1
