"""Faults on a real node: halting conditions, provider refusals, HTTP errors, malformed answers, a
lagging replica; and the steady state: queries per tick and confirmations without new logs.

The scanner reads through a :class:`~tests.support.proxy.FaultProxy` in front of anvil; retries
use a short backoff so that the tests stay fast.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, text

from scanner.app import App
from scanner.chain.reader import ChainReader
from scanner.chain.retrying import Backoff
from scanner.chain.rpc import RpcClient
from scanner.config import Settings
from scanner.core.ranges import RangeSizer
from scanner.errors import MalformedResponse
from scanner.scan.live import ChainScanner
from scanner.scan.parts import ChainParts
from scanner.testkit.gateway import NewPayment, db_id, insert_payments
from scanner.testkit.settings import CHAIN, chain_settings
from tests.e2e.actions import pay
from tests.e2e.harness import Harness, stored_cursor
from tests.support.metrics import sample
from tests.support.proxy import FaultProxy
from tests.support.wait import until

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
CAROL = "0x" + "c3" * 20
DAVE = "0x" + "d4" * 20
FAST = Backoff(initial=0.01, maximum=0.05, max_retry_after=0.05)


@pytest.fixture
async def proxy(h: Harness) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(h.chain.url) as fault_proxy:
        yield fault_proxy


async def scan_through(h: Harness, url: str, **overrides: Any) -> ChainScanner:
    """Make ``h`` scan through ``url`` (a proxy), with a short retry backoff."""
    chain = chain_settings(url, [("USDT", h.token, 6), ("DAI", h.token18, 18)], **overrides)
    if h.scanner is not None:
        await h.scanner.reader.client.aclose()
    client = RpcClient(
        CHAIN,
        [url + "/v3/KEY"],
        timeout=chain.rpc_timeout,
        max_attempts=chain.rpc_max_attempts,
        observer=h.metrics,
        backoff=FAST,
    )
    reader = ChainReader(client, recent=chain.reorg_depth)
    h.scanner = ChainScanner(ChainParts(chain, reader, h.sessions, metrics=h.metrics))
    await h.scanner.prepare()
    return h.scanner


async def credited_once(h: Harness, pid: str, value: int) -> None:
    (tx,) = await h.transactions(pid)
    assert tx["value"] == value and tx["status"] != "orphaned"
    assert [e for e in await h.events(pid) if e[0] == "transfer_detected"] == [
        ("transfer_detected", None, None)
    ]


# ------------------------------------------------------------------------------------ halts


def _chains(app: App) -> dict[str, dict[str, Any]]:
    """Each chain's health; a chain not registered yet (the App is starting) reads as empty."""
    chains: dict[str, dict[str, Any]] = app.health.healthy()[1]["chains"]
    return {name: chains.get(name, {}) for name in (CHAIN, "wrongid", "decimals")}


def _halted(app: App, chain: str) -> float:
    return sample(app.metrics, "scanner_chain_halted", chain=chain)


async def test_chain_id_mismatch_and_token_decimal_conflicts_halt_only_their_chain(
    h: Harness, proxy: FaultProxy
) -> None:
    tokens = [("USDT", h.token, 6)]
    good = chain_settings(h.chain.url, tokens, poll_interval=0.02)
    wrong_id = chain_settings(proxy.url, tokens, name="wrongid", chain_id=1, poll_interval=0.02)
    decimals = chain_settings(
        h.chain.url, [("USDT", h.token, 18)], name="decimals", poll_interval=0.02
    )
    async with h.engine.begin() as conn:  # the table says 6 decimals; the config says 18
        await conn.execute(
            text(
                "INSERT INTO tokens (id, chain, address, symbol, decimals, enabled)"
                " VALUES (:id, 'decimals', :a, 'USDT', 6, :t)"
            ),
            {"id": db_id(h.engine, uuid.uuid4()), "a": h.token, "t": True},
        )
    settings: Settings = h.settings.model_copy(
        update={
            "chains": [good, wrong_id, decimals],
            "metrics": h.settings.metrics.model_copy(update={"enabled": False}),
        }
    )
    app = App(settings, environ={})
    task = asyncio.create_task(app.run())
    try:
        await until(
            lambda: (
                bool(_chains(app)["wrongid"].get("halted"))
                and bool(_chains(app)["decimals"].get("halted"))
            )
        )
        assert "chain id 31337" in _chains(app)["wrongid"]["halt_reason"]
        assert "18 decimals" in _chains(app)["decimals"]["halt_reason"]
        assert _halted(app, "wrongid") == _halted(app, "decimals") == 1
        assert _halted(app, CHAIN) == 0

        h.mine(3)  # the good chain goes on
        head = h.chain.head()
        await until(lambda: _chains(app)[CHAIN]["cursor"] == head)
        h.mine(2)
        head = h.chain.head()
        await until(lambda: _chains(app)[CHAIN]["cursor"] == head)
        assert proxy.count("eth_chainId") == 1  # halted, never retried
        assert proxy.count("eth_blockNumber") == 0
        async with h.engine.connect() as conn:
            states = (await conn.execute(text("SELECT chain FROM chain_states"))).scalars().all()
            stored = (
                await conn.execute(text("SELECT decimals FROM tokens WHERE chain = 'decimals'"))
            ).scalar_one()
        assert sorted(states) == [CHAIN]  # the halted chains never started scanning
        assert stored == 6  # the table is never overwritten
    finally:
        app.stop.set()
        assert await asyncio.wait_for(task, 10) == 0


async def test_a_token_disabled_in_the_table_is_not_scanned(h: Harness, proxy: FaultProxy) -> None:
    usdt = await h.create_payment(ALICE, "1")
    dai = await h.create_payment(BOB, "1", token=h.token18)
    async with h.engine.begin() as conn:
        await conn.execute(
            text("UPDATE tokens SET enabled = :f WHERE address = :a"),
            {"f": False, "a": h.token18},
        )
    scanner = await scan_through(h, proxy.url)  # a restart: tokens are read again
    assert sorted(scanner.ctx.token_addresses) == [h.token]
    pay(h, ALICE, 1_000_000)
    pay(h, BOB, 10**18, token=h.token18)
    h.mine(3)
    await h.scan()
    assert await h.status(usdt) == "confirmed"
    row = await h.payment(dai)
    assert row["status"] == "pending" and row["amount_received"] == 0
    assert await h.transactions(dai) == []
    assert await h.events(dai) == []
    async with h.engine.connect() as conn:  # the row stays as the gateway left it
        enabled = (
            await conn.execute(
                text("SELECT enabled FROM tokens WHERE address = :a"), {"a": h.token18}
            )
        ).scalar_one()
    assert not enabled


# ------------------------------------------------------------------------- provider refusals


class RecordingSizer(RangeSizer):
    """The scanner's RangeSizer, remembering every size it took."""

    def __init__(self, ceiling: int) -> None:
        super().__init__(ceiling)
        self.sizes = [ceiling]

    def shrink(self, suggested: int | None = None, *, refused: int | None = None) -> int:
        if super().shrink(suggested, refused=refused) != self.sizes[-1]:
            self.sizes.append(self.size)
        return self.size

    def succeeded(self) -> int:
        if super().succeeded() != self.sizes[-1]:
            self.sizes.append(self.size)
        return self.size


async def test_a_provider_range_cap_shrinks_the_range_and_it_grows_back(
    h: Harness, proxy: FaultProxy
) -> None:
    scanner = await scan_through(h, proxy.url, batch_size=32)
    scanner.sizer = sizer = RecordingSizer(32)
    payments = [await h.create_payment(a, "2") for a in (ALICE, BOB, CAROL, DAVE)]
    for n, address in enumerate((ALICE, BOB, CAROL, DAVE)):
        pay(h, address, 2_000_000)
        h.mine(5 + n * 3)
    h.mine(80)  # every transfer beyond the reorg window (64): read by range, not by block hash
    proxy.cap_logs_range(4)  # Alchemy: "... this block range should work: [0x.., 0x..]"
    await h.scan()
    assert sizer.sizes[:2] == [32, 4]  # straight to the size the provider named
    assert max(sizer.sizes[1:]) <= 8  # grew back (4 → 8), refused again, never more
    for pid in payments:
        assert await h.status(pid) == "confirmed"
        assert (await h.payment(pid))["amount_received"] == Decimal("2")
        await credited_once(h, pid, 2_000_000)
    assert await stored_cursor(h) == h.chain.head()

    proxy.reset()  # the provider lifts its cap: the range grows back to batch_size
    h.mine(300)
    await h.scan()
    assert sizer.sizes[-3:] == [8, 16, 32] and scanner.sizer.size == 32
    assert await stored_cursor(h) == h.chain.head()


async def test_a_result_cap_without_a_hint_halves_the_range(h: Harness, proxy: FaultProxy) -> None:
    scanner = await scan_through(h, proxy.url, batch_size=32)
    scanner.sizer = sizer = RecordingSizer(32)
    pid = await h.create_payment(ALICE, "3")
    for _ in range(3):
        pay(h, ALICE, 1_000_000)
        h.mine(2)
    h.mine(150)  # four ranges of 32 far from the head, read at once (concurrency 4)
    proxy.cap_logs_range(5, message="query returned more than 10000 results", code=-32005)
    await h.scan()
    # Halved until the node took it (the first refusal may be of a short tail range: 7 → 3).
    # Four reads in flight refused at once shrink the size once, not down to a single block.
    assert sizer.sizes[0] == 32 and 3 <= min(sizer.sizes) <= 5
    row = await h.payment(pid)
    assert row["status"] == "confirmed" and row["amount_received"] == Decimal("3")
    assert len(await h.transactions(pid)) == 3


async def test_http_500s_and_429s_are_retried_and_the_scan_completes(
    h: Harness, proxy: FaultProxy
) -> None:
    await scan_through(h, proxy.url)
    pid = await h.create_payment(ALICE, "5")
    pay(h, ALICE, 5_000_000)
    h.mine(3)
    proxy.fail_http("eth_blockNumber", 502, times=1)
    proxy.fail_http("eth_getLogs", 500, times=2)
    proxy.rate_limit("eth_getBlockByNumber", retry_after="0", times=2)
    await h.scan()
    assert await h.status(pid) == "confirmed"
    await credited_once(h, pid, 5_000_000)
    retries = "scanner_rpc_retries_total"
    assert sample(h.metrics, retries, chain=CHAIN, method="eth_getLogs") == 2
    assert sample(h.metrics, retries, chain=CHAIN, method="eth_blockNumber") == 1
    assert all(rule.times == 0 for rule in proxy.rules)


async def test_a_malformed_answer_is_a_clear_error_and_loses_nothing(
    h: Harness, proxy: FaultProxy
) -> None:
    await scan_through(h, proxy.url)
    first = await h.create_payment(ALICE, "1")
    second = await h.create_payment(BOB, "1")
    pay(h, ALICE, 1_000_000)
    h.mine(2)
    pay(h, BOB, 1_000_000)
    proxy.malformed("eth_getLogs", times=1)
    with pytest.raises(MalformedResponse, match=r"eth_getLogs.*not JSON") as caught:
        await h.scan()
    assert caught.value.method == "eth_getLogs"
    proxy.malformed("eth_getBlockByNumber", times=1, body=b'{"jsonrpc": "2.0"}')
    h.mine(1)
    with pytest.raises(MalformedResponse):
        await h.scan()
    await h.scan()  # the next tick goes on from the committed cursor
    assert await stored_cursor(h) == h.chain.head()
    for pid in (first, second):
        assert (await h.payment(pid))["amount_received"] == Decimal("1")
        await credited_once(h, pid, 1_000_000)


# ---------------------------------------------------------------------------- a lagging node


async def test_a_lagging_replica_makes_the_chain_wait_never_rewind_or_skip(
    h: Harness, proxy: FaultProxy
) -> None:
    scanner = await scan_through(h, proxy.url)
    ids = {a: await h.create_payment(a, "1") for a in (ALICE, BOB, CAROL, DAVE)}
    pay(h, ALICE, 1_000_000)
    await h.scan()
    head = h.chain.head()
    assert await stored_cursor(h) == head
    cursors = [head]

    proxy.lag(3)  # behind the load balancer now: a replica three blocks behind
    outcome = await scanner.tick()
    assert outcome.waiting and outcome.head == head - 3
    cursors.append(await stored_cursor(h))

    for address in (BOB, CAROL, DAVE):  # blocks head+1, head+2, head+3
        pay(h, address, 1_000_000)
    h.mine(2)  # the node is at head+5, the replica at head+2
    for _ in range(3):
        await scanner.tick()
        cursors.append(await stored_cursor(h))
    assert cursors[-1] == head + 2  # never past what the replica can show
    assert await h.status(ids[BOB]) == "confirming"
    assert await h.status(ids[CAROL]) == "confirming"
    assert (await h.payment(ids[DAVE]))["amount_received"] == 0  # not seen yet, not skipped

    proxy.lag(0)  # the replica catches up
    await h.scan()
    cursors.append(await stored_cursor(h))
    assert cursors == sorted(cursors)  # the cursor never moved backwards
    assert cursors[-1] == h.chain.head()
    for pid in ids.values():
        assert (await h.payment(pid))["amount_received"] == Decimal("1")
        await credited_once(h, pid, 1_000_000)
    async with h.engine.connect() as conn:
        numbers = (
            (
                await conn.execute(
                    text("SELECT number FROM blocks WHERE chain = :c ORDER BY number"), {"c": CHAIN}
                )
            )
            .scalars()
            .all()
        )
    assert numbers == list(range(numbers[0], h.chain.head() + 1))  # no block passed over


# ------------------------------------------------------------------------------ steady state


@contextmanager
def counting_statements(h: Harness) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(h.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(h.engine.sync_engine, "before_cursor_execute", count)


async def steady_ticks(h: Harness, scanner: ChainScanner, to: str) -> tuple[int, int]:
    """Statements of a tick that scans one block with one transfer, and of an idle tick (each
    with the look for unseen payments it starts beside it)."""
    pay(h, to, 1)
    with counting_statements(h) as busy:
        outcome = await scanner.tick()
        await scanner.book_looked_at()
    assert outcome.ranges == 1 and outcome.caught_up
    with counting_statements(h) as idle:
        outcome = await scanner.tick()
        await scanner.book_looked_at()
    assert outcome.ranges == 0 and outcome.caught_up
    return len(busy), len(idle)


def random_address() -> str:
    return "0x" + uuid.uuid4().hex + uuid.uuid4().hex[:8]


async def bulk_payments(h: Harness, count: int) -> None:
    """``count`` open payments at addresses nobody pays, in one executemany.

    Created a little ahead of the chain's clock (beyond the grace), so that the tick that first
    sees them has no look-back to do: that one-off catch-up is not what is measured here.
    """
    token_id = await h.token_id(h.token)
    created = h.now() + h.chain_settings.grace_seconds + 60
    rows = [
        NewPayment(uuid.uuid4(), token_id, CHAIN, random_address(), "10", created + 3600, created)
        for _ in range(count)
    ]
    async with h.engine.begin() as conn:
        await insert_payments(conn, rows)


async def test_queries_per_tick_do_not_grow_with_open_payments(h: Harness) -> None:
    open_ids = [await h.create_payment("0x" + f"{n + 1:02x}" * 20, "10") for n in range(10)]
    pay(h, "0x" + "01" * 20, 1_000_000)  # one payment confirming, the others waiting
    await h.scan()
    assert h.scanner is not None
    scanner = h.scanner
    with_10 = await steady_ticks(h, scanner, "0x" + "02" * 20)

    await bulk_payments(h, 9_990)
    h.mine(1)
    await scanner.tick()  # the first tick starts the look at the new payments, once
    await scanner.book_looked_at()
    with_10_000 = await steady_ticks(h, scanner, "0x" + "03" * 20)

    assert with_10_000 == with_10
    async with h.engine.connect() as conn:
        total = (
            await conn.execute(
                text("SELECT count(*) FROM payments WHERE status IN ('pending', 'confirming')")
            )
        ).scalar_one()
    assert total == 10_000
    assert (await h.payment(open_ids[2]))["amount_received"] == Decimal("0.000001")


async def test_confirmations_advance_on_ticks_without_logs(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "7")
    pay(h, ALICE, 7_000_000)
    await h.scan()
    assert (await h.payment(pid))["confirmations"] == 1
    seen = []
    for _ in range(2):
        h.mine(1)  # an empty block: the range has no logs
        await h.scan()
        row = await h.payment(pid)
        (tx,) = await h.transactions(pid)
        seen.append((row["status"], row["confirmations"], tx["status"], tx["confirmations"]))
    assert seen == [
        ("confirming", 2, "pending", 2),
        ("confirmed", 3, "confirmed", 3),
    ]
