"""A node without old blocks (pruned, started from a snapshot, its history expired): a block far
below the node's head that it does not show is one it *cannot* show, never one it has not got
*yet*. A look-back over history stops above it (``catch_up_truncated``) and the chain goes on; a
range the live scan must cover is never passed over; a block near the head that a lagging
replica lacks is waited for, never skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal

import pytest
from structlog.testing import capture_logs

from scanner.core.decode import TRANSFER_TOPIC
from scanner.errors import BlockNotAvailable
from scanner.scan.lookback import Start, window_headers
from scanner.testkit.settings import CHAIN
from tests.e2e.actions import pay
from tests.e2e.harness import Harness, stored_cursor
from tests.e2e.test_catchup import block_time
from tests.e2e.test_faults import scan_through
from tests.support.metrics import sample
from tests.support.proxy import FaultProxy

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20


@pytest.fixture
async def proxy(h: Harness) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(h.chain.url) as fault_proxy:
        yield fault_proxy


def truncations(logs: Sequence[Mapping[str, object]]) -> list[Mapping[str, object]]:
    return [e for e in logs if e["event"] == "catch_up_truncated"]


def block_of(h: Harness, tx_hash: str) -> int:
    receipt = h.chain.receipt(tx_hash)
    assert receipt is not None
    return int(receipt["blockNumber"], 16)


@pytest.mark.parametrize(
    ("node", "says"),
    [
        ("null headers, logs still served", "cannot show"),
        ("expired history (EIP-4444)", "pruned history"),
    ],
)
async def test_a_node_without_old_headers_truncates_the_catch_up_and_the_chain_goes_on(
    h: Harness, proxy: FaultProxy, node: str, says: str
) -> None:
    await scan_through(h, proxy.url)
    await h.scan()
    old_tx = pay(h, ALICE, 5_000_000)
    h.chain.mine(150, 12)  # the transfer falls below the stored blocks (12 s apart)
    await h.scan()
    pruned_below = h.chain.head() - 40
    proxy.prune_below(pruned_below, logs=node.startswith("expired"), expired="4444" in node)
    late = await h.create_payment(ALICE, "5", created_at=block_time(h, old_tx) - 5)
    with capture_logs() as logs:
        await h.scan()  # looks back, cannot see the old blocks, reports it, goes on
        fresh = await h.create_payment(BOB, "2")
        pay(h, BOB, 2_000_000)
        h.mine(3)
        await h.scan()
    assert await stored_cursor(h) == h.chain.head()
    (event,) = truncations(logs)
    from_block = event["from_block"]
    assert (event["payment_id"], event["reason"]) == (late, "not_available")
    assert isinstance(from_block, int) and block_of(h, old_tx) < from_block
    assert from_block <= pruned_below  # from the blocks the scanner stored, or the node shows
    assert says in str(event["detail"])
    truncated = sample(
        h.metrics, "scanner_catch_up_truncated_total", chain=CHAIN, reason="not_available"
    )
    assert truncated == 1
    row = await h.payment(late)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("0"))
    assert (await h.payment(fresh))["status"] == "confirmed"


async def test_a_lagging_replica_near_the_head_delays_the_look_back_and_skips_no_block(
    h: Harness, proxy: FaultProxy
) -> None:
    """A "header not found" for a look-back's logs while its first block is one the node shows
    (the range reaches blocks a replica behind the load balancer has not got): not yet, so the
    look-back waits for the next tick; it never starts above the block the payment was paid in."""
    await scan_through(h, proxy.url)
    await h.scan()
    h.chain.increase_time(1_000)  # the payment's look-back starts at the paying block itself
    paid = pay(h, ALICE, 5_000_000)
    h.mine(2)
    await h.scan()
    late = await h.create_payment(ALICE, "5", created_at=block_time(h, paid) - 5)
    proxy.rpc_error("eth_getLogs", "header not found", times=h.chain_settings.rpc_max_attempts)
    with capture_logs() as logs:
        with pytest.raises(BlockNotAvailable, match="header not found"):
            await h.scan()
        assert (await h.payment(late))["amount_received"] == Decimal("0")
        h.mine(3)
        await h.scan()
    assert truncations(logs) == []
    row = await h.payment(late)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("5"))


async def test_a_live_range_the_node_cannot_show_is_waited_for_and_never_passed_over(
    h: Harness, proxy: FaultProxy
) -> None:
    await scan_through(h, proxy.url)
    await h.scan()
    pid = await h.create_payment(ALICE, "5")
    cursor = await stored_cursor(h)
    h.mine(60)
    pay(h, ALICE, 5_000_000)
    h.chain.mine(200, 12)  # the scanner was away: its next range lies far below the head
    proxy.prune_below(h.chain.head() - 40)
    for _ in range(2):
        with pytest.raises(BlockNotAvailable, match="cannot show block"):
            await h.scan()
        assert await stored_cursor(h) == cursor  # waits: nothing passed over
    proxy.prune_below(None)  # a node with the blocks (another provider, a restored archive)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("5"))
    assert await stored_cursor(h) == h.chain.head()


async def test_logs_served_without_their_headers_start_the_look_back_above_them(
    h: Harness, proxy: FaultProxy
) -> None:
    """A node that still serves old logs but not their blocks' headers (another replica behind
    the same URL): a transfer there has no time or hash to be judged by, so the look-back starts
    above the blocks the node cannot show and says so; what it found above is kept."""
    scanner = await scan_through(h, proxy.url)
    old = block_of(h, pay(h, ALICE, 1_000_000))
    h.mine(20)
    pruned_below = h.chain.head() + 1
    new = block_of(h, pay(h, ALICE, 2_000_000))
    h.chain.mine(100, 12)
    head = h.chain.head()
    found = await scanner.reader.logs([h.token], TRANSFER_TOPIC, 0, head)
    assert {old, new} <= {int(e["blockNumber"], 16) for e in found}
    proxy.prune_below(pruned_below, logs=False)
    start, logs, _, headers = await window_headers(scanner.reader, Start(0), head, (found, []), {})
    assert (start.block, start.truncated) == (pruned_below, "not_available")
    assert "cannot show" in start.detail
    assert [int(e["blockNumber"], 16) for e in logs] == [new]
    assert [header.number for header in headers] == [new]
