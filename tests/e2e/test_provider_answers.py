"""Every odd answer a provider gives, from a fault proxy in front of anvil: each ends with the
payment credited once and nothing skipped, and is counted under its own outcome label of
``scanner_rpc_requests_total`` (docs/providers.md's table says the same)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest

from scanner.errors import BlockNotAvailable, MalformedResponse, RpcResponseError
from scanner.scan.live import ChainScanner
from scanner.testkit.settings import CHAIN
from tests.e2e.actions import pay
from tests.e2e.harness import Harness, stored_cursor
from tests.e2e.test_faults import credited_once, scan_through
from tests.support.proxy import FaultProxy

ALICE = "0x" + "a1" * 20
HEADERS = "batch:eth_getBlockByNumber"


@dataclass(frozen=True)
class Fault:
    program: Callable[[FaultProxy], object]
    method: str  # the metric's method label
    outcome: str  # the metric's outcome label
    fails_the_tick: type[Exception] | None = None  # not retried: the next tick goes on


FAULTS = {
    "html page with HTTP 200": Fault(
        lambda p: p.malformed("eth_getLogs", times=1), "eth_getLogs", "not_json", MalformedResponse
    ),
    "truncated body": Fault(
        lambda p: p.truncate("eth_getLogs", times=1), "eth_getLogs", "truncated"
    ),
    "batch item missing": Fault(
        lambda p: p.drop_batch_item("eth_getBlockByNumber", times=1), HEADERS, "batch_incomplete"
    ),
    "batch out of order": Fault(lambda p: p.reverse_batches(), HEADERS, "ok"),
    "null block shown a moment ago": Fault(
        lambda p: p.null_result("eth_getBlockByNumber", times=1), HEADERS, "not_available"
    ),
    "429 with Retry-After": Fault(
        lambda p: p.rate_limit("eth_getLogs", retry_after="0", times=1),
        "eth_getLogs",
        "rate_limited",
    ),
    "rate limit as a JSON-RPC error": Fault(
        lambda p: p.rpc_error("eth_getLogs", "Too Many Requests", code=-32005, times=1),
        "eth_getLogs",
        "rate_limited",
    ),
    "HTTP 503": Fault(
        lambda p: p.fail_http("eth_blockNumber", 503, times=1), "eth_blockNumber", "transport_error"
    ),
    "unknown block (a replica without it)": Fault(
        lambda p: p.rpc_error("eth_getLogs", "unknown block", times=1),
        "eth_getLogs",
        "not_available",
    ),
    "node error": Fault(
        lambda p: p.rpc_error("eth_getLogs", "execution aborted", code=-32603, times=1),
        "eth_getLogs",
        "response_error",
        RpcResponseError,
    ),
}


@pytest.fixture
async def proxy(h: Harness) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(h.chain.url) as fault_proxy:
        yield fault_proxy


def requests(h: Harness, method: str, outcome: str) -> float:
    value = h.metrics.registry.get_sample_value(
        "scanner_rpc_requests_total", {"chain": CHAIN, "method": method, "outcome": outcome}
    )
    return float(value or 0.0)


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_each_provider_answer_ends_credited_once_under_its_own_label(
    h: Harness, proxy: FaultProxy, fault: str
) -> None:
    spec = FAULTS[fault]
    await scan_through(h, proxy.url)
    pid = await h.create_payment(ALICE, "3")
    pay(h, ALICE, 3_000_000)
    h.mine(3)
    before = requests(h, spec.method, spec.outcome)
    spec.program(proxy)
    if spec.fails_the_tick is not None:
        with pytest.raises(spec.fails_the_tick):
            await h.scan()
    await h.scan()
    assert requests(h, spec.method, spec.outcome) > before
    assert all(rule.times in (0, None) for rule in proxy.rules)
    assert await h.status(pid) == "confirmed"
    assert (await h.payment(pid))["amount_received"] == Decimal("3")
    await credited_once(h, pid, 3_000_000)
    assert await stored_cursor(h) == h.chain.head()


async def tick_as_the_app(scanner: ChainScanner) -> None:
    """One tick; a block still unavailable after the retries waits for the next tick, as in
    the App's chain loop (``chain_error``)."""
    with contextlib.suppress(BlockNotAvailable):
        await scanner.tick()


async def test_a_load_balancer_over_a_replica_three_blocks_behind_loses_nothing(
    h: Harness, proxy: FaultProxy
) -> None:
    """Every other request is answered by a replica three blocks behind: a head that goes
    back and forth, ``[]`` and ``null`` for blocks it does not have yet."""
    scanner = await scan_through(h, proxy.url)
    recipients = ["0x" + f"{n + 0x10:02x}" * 20 for n in range(12)]
    ids = [await h.create_payment(a, "1") for a in recipients]
    proxy.lag(3, every_other=True)
    for n, address in enumerate(recipients):
        pay(h, address, 1_000_000)
        if n % 3 == 2:
            await tick_as_the_app(scanner)  # live: follows the head as the blocks come
    h.mine(4)
    for _ in range(50):
        await tick_as_the_app(scanner)
        if await stored_cursor(h) == h.chain.head():
            break
    assert await stored_cursor(h) == h.chain.head()
    for pid in ids:
        assert await h.status(pid) == "confirmed"
        await credited_once(h, pid, 1_000_000)
    assert 10 <= proxy.lagged_requests <= proxy.http_requests - 10  # both views answered


@pytest.mark.parametrize(
    ("behind", "window"),
    [
        (40, None),  # inside the reorg window (64), below what used to count as the head (16)
        (40, 5),  # below a small reorg window: read far below the head, without headers
    ],
)
async def test_logs_from_a_replica_behind_the_range_are_never_taken(
    h: Harness, proxy: FaultProxy, behind: int, window: int | None
) -> None:
    """The balancer sends every eth_getLogs to a replica ``behind + 10`` blocks behind: its
    answer by number stops at its head, silently. The payment's block is never passed over:
    the tick fails (``not_available``) until the replica has the range, then credits it."""
    scanner = await scan_through(h, proxy.url, max_reorg_depth=window)
    pid = await h.create_payment(ALICE, "3")
    await h.scan()
    cursor = await stored_cursor(h)
    pay(h, ALICE, 3_000_000)  # the next block
    h.mine(behind)
    proxy.lag(behind + 10, only="eth_getLogs")
    with pytest.raises(BlockNotAvailable):
        await scanner.tick()
    assert await stored_cursor(h) == cursor  # nothing passed over
    assert requests(h, "eth_getLogs", "not_available") > 0

    proxy.lag(0)  # the replica catches up
    await h.scan()
    assert await h.status(pid) == "confirmed"
    await credited_once(h, pid, 3_000_000)
    assert await stored_cursor(h) == h.chain.head()
