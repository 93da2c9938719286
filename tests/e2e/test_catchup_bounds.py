"""A catch-up never stalls the chain (docs/design.md, "Matching"): the look-back is bounded by
``catch_up_max_blocks``, and a node that cannot show an old block (pruned, started from a
snapshot) ends the look-back there; both are reported (``catch_up_truncated``, a metric) and the
chain goes on scanning."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from scanner.db import payments
from scanner.scan import lookback
from scanner.scan.catchup import catch_up
from scanner.testkit.gateway import NewPayment, insert_payments
from scanner.testkit.settings import CHAIN
from tests.e2e.actions import pay
from tests.e2e.harness import Harness
from tests.e2e.test_catchup import block_time
from tests.e2e.test_faults import scan_through
from tests.support.metrics import sample
from tests.support.proxy import FaultProxy

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
CAROL = "0x" + "c3" * 20
PAGE = 300  # rows a catch-up page: more addresses than lookback.WHOLE_LOGS_ABOVE


@pytest.fixture
async def proxy(h: Harness) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(h.chain.url) as fault_proxy:
        yield fault_proxy


def truncations(logs: Sequence[Mapping[str, object]]) -> list[Mapping[str, object]]:
    return [e for e in logs if e["event"] == "catch_up_truncated"]


async def test_a_node_without_old_blocks_truncates_the_catch_up_and_the_chain_goes_on(
    h: Harness, proxy: FaultProxy
) -> None:
    scanner = await scan_through(h, proxy.url)
    await h.scan()
    old_tx = pay(h, ALICE, 5_000_000)
    h.chain.mine(150, 12)  # the transfer falls below the stored blocks (12 s apart)
    await h.scan()
    pruned_below = h.chain.head() - 100  # deeper than the reorg window: gone, not late
    proxy.prune_below(pruned_below)  # the node now shows no block below this one
    late = await h.create_payment(ALICE, "5", created_at=block_time(h, old_tx) - 5)
    with capture_logs() as logs:
        await h.scan()  # looks back, cannot see the old blocks, reports it, goes on
        fresh = await h.create_payment(BOB, "2")
        pay(h, BOB, 2_000_000)
        h.mine(3)
        await h.scan()
    assert scanner.cursor == h.chain.head()
    (event,) = truncations(logs)
    assert (event["payment_id"], event["reason"], event["from_block"]) == (
        late,
        "not_available",
        pruned_below,
    )
    assert event["log_level"] == "warning" and "cannot show" in str(event["detail"])
    truncated = sample(
        h.metrics, "scanner_catch_up_truncated_total", chain=CHAIN, reason="not_available"
    )
    assert truncated == 1
    row = await h.payment(late)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("0"))
    assert (await h.payment(fresh))["status"] == "confirmed"
    assert proxy.count("eth_getBlockByNumber") > 0


async def test_a_catch_up_older_than_catch_up_max_blocks_stops_at_the_bound(h: Harness) -> None:
    h.scanner = h.make_scanner(catch_up_max_blocks=10)
    await h.scanner.prepare()
    await h.scan()
    old_tx = pay(h, CAROL, 3_000_000)
    h.chain.mine(150, 12)
    await h.scan()
    late = await h.create_payment(CAROL, "3", created_at=block_time(h, old_tx) - 5)
    near_tx = pay(h, ALICE, 1_000_000)
    near = await h.create_payment(ALICE, "1", created_at=block_time(h, near_tx) - 5)
    h.mine(1)
    with capture_logs() as logs:
        await h.scan()
    (event,) = truncations(logs)
    assert (event["payment_id"], event["reason"]) == (late, "bound")
    assert sample(h.metrics, "scanner_catch_up_truncated_total", chain=CHAIN, reason="bound") == 1
    assert (await h.payment(late))["amount_received"] == Decimal("0")
    assert (await h.payment(near))["amount_received"] == Decimal("1")  # inside the stored blocks
    assert h.scanner.cursor == h.chain.head()


async def test_many_payments_behind_the_cursor_are_looked_back_for_in_pages_from_whole_logs(
    h: Harness, proxy: FaultProxy
) -> None:
    """More addresses than a recipient filter serves well: the token's logs are read whole over
    the window (a few calls, not one per 50 addresses), a page of rows at a time."""
    assert PAGE > lookback.WHOLE_LOGS_ABOVE > 103
    scanner = await scan_through(h, proxy.url)
    await h.scan()
    paid = ["0x" + f"{n:040x}" for n in range(1, 4)]
    txs = [pay(h, address, 1_000_000) for address in paid]
    h.mine(2)
    await h.scan()
    created = block_time(h, txs[0]) - 5
    token_id = await h.token_id(h.token)
    others = [
        NewPayment(uuid.uuid4(), token_id, CHAIN, f"0x{n:040x}", "1", created + 3600, created)
        for n in range(100, 100 + PAGE + 100)
    ]
    ours = [
        NewPayment(uuid.uuid4(), token_id, CHAIN, address, "1", created + 3600, created)
        for address in paid
    ]
    async with h.engine.begin() as conn:
        await insert_payments(conn, [*others, *ours])
    before = proxy.count("eth_getLogs")
    catch_up_pages = 0
    original = payments.unseen

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal catch_up_pages
        catch_up_pages += 1
        return await original(*args, **kwargs)

    payments.unseen = counted
    try:
        found = await catch_up(h.sessions, scanner.reader, scanner.ctx, page=PAGE)
    finally:
        payments.unseen = original
    assert found == len(others) + len(ours)
    assert found == PAGE + 103 and catch_up_pages == 2
    # the first page (300 addresses) reads the token's logs whole: one call, where a recipient
    # filter takes 6; the second (103 addresses) filters by recipient: 3
    assert proxy.count("eth_getLogs") - before == 1 + 3
    for payment in ours:
        row = await h.payment(str(payment.id))
        assert row["amount_received"] == Decimal("1") and row["status"] != "pending"
    unpaid = [(await h.payment(str(p.id)))["amount_received"] for p in others[:5]]
    assert unpaid == [Decimal("0")] * 5
