"""An operator resumes a chain halted by a reorg deeper than max_reorg_depth."""

from __future__ import annotations

import pytest

from scanner.errors import DeepReorg
from scanner.scan.operator import rewind_chain
from tests.e2e.actions import pay
from tests.e2e.harness import Harness

ALICE = "0x" + "a7" * 20


async def test_rewind_after_a_deep_reorg_orphans_and_rescans(h: Harness) -> None:
    h.chain_settings = h.chain_settings.model_copy(update={"max_reorg_depth": 3})
    pid = await h.create_payment(ALICE, "7")
    pay(h, ALICE, 7_000_000)
    await h.scan()
    assert await h.status(pid) == "confirming"
    paid_block = h.chain.head()
    h.mine(1)
    await h.scan()
    h.chain.reorg(5)  # deeper than max_reorg_depth: the transfer's block is replaced
    with pytest.raises(DeepReorg):
        await h.scan()

    assert h.scanner is not None
    outcome = await rewind_chain(h.chain_settings, h.scanner.reader, h.sessions, paid_block - 2)
    assert outcome.orphaned == 1
    assert await h.status(pid) == "pending"
    (tx,) = await h.transactions(pid)
    assert tx["status"] == "orphaned"

    await h.scanner.scan_until_head()
    assert h.scanner.cursor == h.chain.head()
    row = await h.payment(pid)
    assert row["status"] == "pending" and row["amount_received"] == 0
    assert ("transfer_orphaned", None, None) in await h.events(pid)
