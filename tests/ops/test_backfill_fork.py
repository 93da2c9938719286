"""A backfill through a stale replica beside the live scan, against real nodes and both databases.

The replica is a second node loaded with the first one's state and left to mine on its own: the
same blocks up to the copy, another fork above it (a replica that missed a reorg, or one restored
from an old snapshot). Inside the reorg window the backfill writes nothing that contradicts the
blocks the live scan linked, and marks nothing final that the live scan has not linked: the
stale fork's transfers never confirm a payment, and the live scan's credits are never orphaned.
"""

from __future__ import annotations

import pytest

from scanner.config_types import RpcUrl
from scanner.devchain import DevChain
from scanner.errors import StoredBlocksDisagree
from tests.e2e.actions import pay
from tests.e2e.harness import Harness, stored_cursor
from tests.ops.test_backfill import backfill

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20


async def backfill_through(h: Harness, node: DevChain) -> None:
    chain = h.chain_settings.model_copy(update={"rpc_urls": [RpcUrl(node.url)]})
    await backfill(chain, h.sessions, 0, node.head())


async def test_a_replica_on_another_fork_of_the_linked_blocks_writes_nothing(h: Harness) -> None:
    alice = await h.create_payment(ALICE, "10")
    bob = await h.create_payment(BOB, "5")
    with DevChain.start() as stale:
        stale.rpc("anvil_loadState", [h.chain.rpc("anvil_dumpState")])
        pay(h, ALICE, 10_000_000)  # the chain: ALICE paid, linked by the live scan, not final
        await h.scan()
        assert await h.status(alice) == "confirming"
        stale.wait_receipt(stale.transfer(h.token, h.customer, BOB, 5_000_000))
        stale.mine(5)  # the replica's fork at the same height: BOB paid there, "final" there

        with pytest.raises(StoredBlocksDisagree) as refused:
            await backfill_through(h, stale)
        assert refused.value.block == await stored_cursor(h)

    (credit,) = await h.transactions(alice)
    assert credit["status"] == "pending" and await h.status(alice) == "confirming"
    assert await h.transactions(bob) == [] and await h.events(bob) == []
    h.mine(2)
    await h.scan()
    assert await h.status(alice) == "confirmed"


async def test_a_replica_on_a_fork_above_the_live_cursor_confirms_nothing(h: Harness) -> None:
    bob = await h.create_payment(BOB, "5")
    cursor = await stored_cursor(h)
    with DevChain.start() as stale:
        stale.rpc("anvil_loadState", [h.chain.rpc("anvil_dumpState")])
        stale.wait_receipt(stale.transfer(h.token, h.customer, BOB, 5_000_000))
        stale.mine(5)  # BOB paid on the replica's fork only, six blocks deep there
        h.mine(6)  # the chain the live scan will link: no such transfer

        await backfill_through(h, stale)  # links to the stored cursor: the fork is above it
        (credit,) = await h.transactions(bob)
        assert credit["block_number"] == cursor + 1
        assert credit["status"] == "pending" and credit["confirmations"] == 0
        assert await h.status(bob) == "confirming"  # counted, never final on the replica's word

    await h.scan()  # the live scan links the real blocks: the fork's credit is orphaned
    payment = await h.payment(bob)
    assert payment["status"] == "pending" and payment["amount_received"] == 0
    (credit,) = await h.transactions(bob)
    assert credit["status"] == "orphaned"
