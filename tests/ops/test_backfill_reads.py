"""``scanner backfill`` reading near the node's limit, against a real node and both databases.

Far below the head (older than the reorg window) a range reads its logs and the headers of only
the blocks its plan needs the times of; while the payments use few addresses, eth_getLogs asks
for Transfers to them alone. Whatever it reads, a backfill writes the same rows and events as
one that reads every header and whole logs (``max_reorg_depth`` above the head,
``filter_recipients_max = 0``) into a second database. A proxy in front of the node records
what is asked, and can take ``blockTimestamp`` out of the logs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.chain.reader import ChainReader
from scanner.config_types import RpcUrl
from scanner.core.decode import TRANSFER_TOPIC
from scanner.db import payments
from scanner.devchain import DevChain
from scanner.errors import MalformedResponse
from scanner.observe.metrics import Metrics
from scanner.scan import backfill
from scanner.scan.backfill import Backfill, BackfillSummary, Progress
from scanner.scan.fetch import TOPICS_PER_CALL, RangeData, recipient_topic
from scanner.scan.parts import ChainParts
from scanner.scan.pipeline import prefetch_ready
from tests.e2e.harness import Harness
from tests.ops.support import (
    PaymentSpec,
    Scenario,
    build_scenario,
    differences,
    ensure_tokens,
    insert_specs,
    scenario_in,
    snapshot,
)
from tests.support.metrics import sample
from tests.support.proxy import FaultProxy, Json

pytestmark = pytest.mark.long(70)  # seconds, about: the workers take it early

REORG_DEPTH = 3  # the least the scenario's 3 confirmations allow: most blocks are far below
DEEP = {"max_reorg_depth": REORG_DEPTH, "batch_size": 4, "concurrency": 3}
DENSE_WHOLE = {"max_reorg_depth": 100_000, "filter_recipients_max": 0}
Snapshot = dict[str, Any]
EXPIRED = ("status_changed", "pending", "expired")
DETECTED = ("transfer_detected", None, None)
PART = "0x" + "4e" * 20  # the address of a payment paid in part


class ReadsProxy(FaultProxy):
    """Records every eth_getLogs filter and every block eth_getBlockByNumber asks for;
    ``strip_times``: answers logs without ``blockTimestamp`` (as older nodes do)."""

    def __init__(self, upstream: str, *, strip_times: bool = False) -> None:
        super().__init__(upstream)
        self.filters: list[Json] = []
        self.blocks_read: set[int] = set()
        self.header_reads: list[list[int]] = []  # the blocks of each request for headers
        self.strip_times = strip_times
        self.logs: list[Json] = []  # every log answered

    async def _answer_items(self, items: list[Json]) -> list[Json]:
        headers: list[int] = []
        for item in items:
            first = (item.get("params") or [None])[0]
            if item.get("method") == "eth_getLogs":
                self.filters.append(first)
            elif item.get("method") == "eth_getBlockByNumber" and str(first).startswith("0x"):
                self.blocks_read.add(int(first, 16))
                headers.append(int(first, 16))
        if headers:
            self.header_reads.append(headers)
        answers = await super()._answer_items(items)
        for item, answer in zip(items, answers, strict=True):
            result = answer.get("result")
            if item.get("method") == "eth_getLogs" and isinstance(result, list):
                self.logs.extend(result)
                for log in result:
                    self.rewrite(log)
        return answers

    def rewrite(self, log: Json) -> None:
        """Changes a log answered, in place."""
        if self.strip_times:
            log.pop("blockTimestamp", None)


def recipients(flt: Json) -> list[str] | None:
    """An eth_getLogs filter's third topic (the recipients asked for); None: any."""
    topics = flt.get("topics") or []
    return topics[2] if len(topics) > 2 else None


async def backfill_via(
    h: Harness,
    sessions: async_sessionmaker[AsyncSession],
    proxy: ReadsProxy,
    to_block: int | None = None,
    progress: Progress | None = None,
    before_commit: Callable[[], Awaitable[None]] | None = None,
    metrics: Metrics | None = None,
    **chain: Any,
) -> BackfillSummary:
    """Backfill blocks 0..to_block (the head) through ``proxy`` into ``sessions``' database."""
    update = {**DEEP, **chain, "rpc_urls": [RpcUrl(proxy.url)]}
    settings = h.chain_settings.model_copy(update=update)
    reader = ChainReader.from_settings(settings, None)
    end = h.chain.head() if to_block is None else to_block
    job = Backfill(ChainParts(settings, reader, sessions, metrics=metrics or Metrics()))
    job.before_commit = before_commit
    try:
        return await job.run(0, end, progress)
    finally:
        await reader.client.aclose()


async def token_scenario(h: Harness, empty_blocks: int = 0) -> tuple[Scenario, list[PaymentSpec]]:
    """The scenario after ``empty_blocks`` empty blocks, its token payments alone written to
    ``h``'s database (an open native-coin payment makes every range read whole blocks)."""
    await ensure_tokens(h.sessions, h.chain_settings)
    if empty_blocks:
        h.chain.mine(empty_blocks)

    async def created(payments: list[PaymentSpec]) -> None:
        await insert_specs(h.engine, [p for p in payments if p.token is not None])

    sc = await build_scenario(h.chain, h.token, h.token18, h.customer, on_payments=created)
    return sc, [p for p in sc.payments if p.token is not None]


async def reference(
    h: Harness,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    payments: list[PaymentSpec],
    to_block: int | None = None,
    **chain: Any,
) -> Snapshot:
    """The rows of a backfill that reads every header and whole logs, in a second database."""
    await ensure_tokens(sessions, h.chain_settings)
    await insert_specs(engine, payments)
    async with ReadsProxy(h.chain.url) as proxy:
        await backfill_via(h, sessions, proxy, to_block, **{**chain, **DENSE_WHOLE})
    end = h.chain.head() if to_block is None else to_block
    assert proxy.blocks_read >= set(range(end + 1))  # every header
    assert all(recipients(f) is None for f in proxy.filters)  # whole logs
    return await snapshot(sessions)


def assert_same(got: Snapshot, want: Snapshot) -> None:
    diff = differences(got, want)
    assert not diff, "\n".join(diff)


def statuses(snap: Snapshot, payments: list[PaymentSpec]) -> dict[str, str]:
    return {p.name: snap["payments"][p.id]["status"] for p in payments}


def expected(sc: Scenario, payments: list[PaymentSpec]) -> dict[str, str]:
    return {p.name: sc.expected[p.name] for p in payments}


def unpaid(address: str, like: PaymentSpec) -> PaymentSpec:
    """A payment at ``address`` nobody pays, of ``like``'s token and times."""
    return PaymentSpec(
        "unpaid", str(uuid.uuid4()), address, "1", like.token, like.created, like.expires
    )


async def paid_in_part_then_expired(h: Harness) -> PaymentSpec:
    """A payment of 10 USDT paid 4, then 10 blocks past its expiry and grace; no later
    transfer to anyone (written to ``h``'s database)."""
    await ensure_tokens(h.sessions, h.chain_settings)
    h.chain.mine(10)
    t0 = h.now()
    payment = PaymentSpec("part", str(uuid.uuid4()), PART, "10", h.token, t0, t0 + 100)
    await insert_specs(h.engine, [payment])
    pay(h, PART, 4_000_000)
    h.chain.increase_time(1_000)
    h.chain.mine(10)
    return payment


def pay(h: Harness, address: str, units: int) -> None:
    h.chain.wait_receipt(h.chain.transfer(h.token, h.customer, address, units))


def kinds(snap: Snapshot, payment: PaymentSpec) -> list[tuple[str, str | None, str | None]]:
    return [e[:3] for e in snap["events"][payment.id]]


# -- the same rows -------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [2, 5])
async def test_a_deep_filtered_backfill_writes_what_a_dense_whole_backfill_writes(
    h: Harness,
    other_engine: AsyncEngine,
    other_sessions: async_sessionmaker[AsyncSession],
    batch_size: int,
) -> None:
    sc, token_payments = await token_scenario(h, empty_blocks=10)
    head = h.chain.head()
    async with ReadsProxy(h.chain.url) as proxy:
        await backfill_via(h, h.sessions, proxy, batch_size=batch_size)
    got = await snapshot(h.sessions)
    assert statuses(got, token_payments) == expected(sc, token_payments)
    assert_same(got, await reference(h, other_engine, other_sessions, token_payments))
    assert set(range(head + 1)) - proxy.blocks_read  # far below: headers not read
    assert set(range(head - REORG_DEPTH + 1, head + 1)) <= proxy.blocks_read  # the window: all
    async with ReadsProxy(h.chain.url) as proxy:
        again = await backfill_via(h, h.sessions, proxy, batch_size=batch_size)
    assert_same(await snapshot(h.sessions), got)  # nothing credited or reported twice
    assert again.events == 0


async def test_reads_joined_into_few_commits_write_what_a_commit_a_read_writes(
    h: Harness,
    other_engine: AsyncEngine,
    other_sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Few logs a read: the reads already in when a commit begins are one commit (a commit's
    cost does not depend on its logs), and the rows and events are those of a commit a read."""
    sc, token_payments = await token_scenario(h, empty_blocks=10)
    whole: dict[str, Any] = {"filter_recipients_max": 0}  # reads of batch_size blocks, 4

    async def slow_commit() -> None:  # the reads ahead (3 at once) come in meanwhile
        await asyncio.sleep(0.2)

    joined: list[int] = []
    async with ReadsProxy(h.chain.url) as proxy:
        await backfill_via(
            h, h.sessions, proxy, progress=lambda _, end: joined.append(end),
            before_commit=slow_commit, **whole,
        )  # fmt: skip
    got = await snapshot(h.sessions)
    assert statuses(got, token_payments) == expected(sc, token_payments)
    monkeypatch.setattr(backfill, "COMMIT_LOGS", -1)  # each read its own commit
    apart: list[int] = []
    await ensure_tokens(other_sessions, h.chain_settings)
    await insert_specs(other_engine, token_payments)
    async with ReadsProxy(h.chain.url) as proxy:
        await backfill_via(
            h, other_sessions, proxy, progress=lambda _, end: apart.append(end), **whole
        )
    assert_same(got, await snapshot(other_sessions))
    head = h.chain.head()
    assert joined[-1] == apart[-1] == head
    assert len(apart) >= head // 4  # a commit a read of 4 blocks
    spans = [b - a for a, b in zip([-1, *joined], joined, strict=False)]
    assert len(joined) < len(apart) and max(spans) >= 3 * 4  # three reads in one commit


async def test_without_block_timestamps_deep_ranges_read_the_headers_of_their_log_blocks(
    h: Harness, other_engine: AsyncEngine, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, token_payments = await token_scenario(h, empty_blocks=10)
    async with ReadsProxy(h.chain.url, strip_times=True) as proxy:
        await backfill_via(h, h.sessions, proxy)
    got = await snapshot(h.sessions)
    assert_same(got, await reference(h, other_engine, other_sessions, token_payments))
    assert {t["block_number"] for t in got["transactions"]} <= proxy.blocks_read


async def test_a_backfill_ending_far_below_the_head_decides_the_expiries_of_its_blocks(
    h: Harness, other_engine: AsyncEngine, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """One deep range, no transfer after the expiry: the final block of the range's end
    decides it."""
    payment = await paid_in_part_then_expired(h)
    end = h.chain.head()
    h.chain.mine(20)
    async with ReadsProxy(h.chain.url) as proxy:
        await backfill_via(h, h.sessions, proxy, end, batch_size=100)
    got = await snapshot(h.sessions)
    assert kinds(got, payment) == [DETECTED, EXPIRED]
    want = await reference(h, other_engine, other_sessions, [payment], end, batch_size=100)
    assert_same(got, want)


async def test_an_expiry_is_judged_before_a_later_transfer_of_the_same_deep_range(
    h: Harness, other_engine: AsyncEngine, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The rest paid 10 blocks after the expiry: late, and after the expiry (as when the
    block before it was checked); one deep range 0..99 holds it all."""
    payment = await paid_in_part_then_expired(h)
    pay(h, PART, 6_000_000)
    h.chain.mine(100)
    async with ReadsProxy(h.chain.url) as proxy:
        await backfill_via(h, h.sessions, proxy, batch_size=100)
    got = await snapshot(h.sessions)
    assert kinds(got, payment) == [DETECTED, EXPIRED, DETECTED, ("paid_late", None, None)]
    want = await reference(h, other_engine, other_sessions, [payment], batch_size=100)
    assert_same(got, want)


# -- what is read --------------------------------------------------------------------------------


async def test_deep_ranges_read_the_headers_of_few_blocks(
    h: Harness, other_engine: AsyncEngine, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, token_payments = await token_scenario(h, empty_blocks=300)
    blocks = h.chain.head() + 1
    async with ReadsProxy(h.chain.url) as proxy:
        await backfill_via(h, h.sessions, proxy, batch_size=50)
    assert proxy.count("eth_getBlockByNumber") <= blocks // 5, sorted(proxy.blocks_read)
    want = await reference(h, other_engine, other_sessions, token_payments, batch_size=50)
    assert_same(await snapshot(h.sessions), want)


async def test_a_deep_range_asks_once_for_the_headers_no_log_timed(
    h: Harness, other_engine: AsyncEngine, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A range far below the head, read as sub-ranges of 50 blocks: the transfers at the start
    of the second need the times of the blocks just before it, which the first one's logs
    gave. Once every sub-range is in, the range asks in one request for the headers of its
    first and last blocks and of the blocks whose times no log gave, and writes what a read
    of every header writes."""
    await ensure_tokens(h.sessions, h.chain_settings)
    t0 = h.now()
    payment = PaymentSpec("many", str(uuid.uuid4()), PART, "1000", h.token, t0, t0 + 100_000)
    await insert_specs(h.engine, [payment])
    h.chain.mine(45 - h.chain.head())
    for _ in range(12):  # blocks 46..57, across the sub-ranges' boundary at 50
        pay(h, PART, 1_000_000)
    h.chain.mine(130 - h.chain.head())
    h.chain.mine(30)  # 0..130 far below the head
    async with ReadsProxy(h.chain.url) as proxy:
        await backfill_via(h, h.sessions, proxy, 130, batch_size=131)
    assert len(proxy.filters) == 3  # 0-49, 50-99, 100-130
    back = h.chain_settings.confirmations
    assert back is not None
    before = set(range(46 - back, 46))  # the blocks no log timed, below the transfers
    assert proxy.header_reads == [sorted({0, *before, *range(131 - back, 131)})]
    want = await reference(h, other_engine, other_sessions, [payment], 130, batch_size=131)
    assert_same(await snapshot(h.sessions), want)


@pytest.mark.parametrize(
    ("limit", "filtered"),
    [
        pytest.param(None, True, id="default"),
        pytest.param(8, True, id="the-8-addresses"),
        pytest.param(7, False, id="one-fewer"),
        pytest.param(0, False, id="zero"),
    ],
)
async def test_get_logs_asks_for_the_payments_addresses_alone_while_they_are_few(
    h: Harness, limit: int | None, filtered: bool
) -> None:
    sc, token_payments = await token_scenario(h)
    topics = sorted(recipient_topic(p.address) for p in token_payments)
    assert len(topics) == 8
    chain: dict[str, Any] = {} if limit is None else {"filter_recipients_max": limit}
    async with ReadsProxy(h.chain.url) as proxy:
        summary = await backfill_via(h, h.sessions, proxy, **chain)
    assert proxy.filters
    if filtered:
        assert all(f["topics"][:2] == [TRANSFER_TOPIC, None] for f in proxy.filters)
        assert all(sorted(recipients(f) or []) == topics for f in proxy.filters)
        assert summary.logs == summary.matched  # the node sent the payments' Transfers alone
    else:
        assert all(recipients(f) is None for f in proxy.filters)
        assert summary.logs > summary.matched  # the mints too
    assert statuses(await snapshot(h.sessions), token_payments) == expected(sc, token_payments)


async def test_many_addresses_are_asked_for_in_chunks(
    h: Harness, other_engine: AsyncEngine, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """700 more payments, their addresses spread among the scenario's: each block range asks
    for the 708 recipients in two eth_getLogs, at most TOPICS_PER_CALL (500) each."""
    _, token_payments = await token_scenario(h, empty_blocks=10)
    spread = [unpaid(f"0x{n * 2**160 // 700:040x}", token_payments[0]) for n in range(700)]
    await insert_specs(h.engine, spread)
    everyone = [*token_payments, *spread]
    async with ReadsProxy(h.chain.url) as proxy:
        await backfill_via(h, h.sessions, proxy)
    by_range: dict[tuple[str, str], list[list[str]]] = {}
    for flt in proxy.filters:
        by_range.setdefault((flt["fromBlock"], flt["toBlock"]), []).append(recipients(flt) or [])
    topics = sorted(recipient_topic(p.address) for p in everyone)
    for calls in by_range.values():
        assert len(calls) == 2 and all(0 < len(c) <= TOPICS_PER_CALL for c in calls)
        assert sorted(calls[0] + calls[1]) == topics
    want = await reference(h, other_engine, other_sessions, everyone)
    assert_same(await snapshot(h.sessions), want)


async def test_without_payments_no_logs_are_read(h: Harness) -> None:
    await ensure_tokens(h.sessions, h.chain_settings)
    h.chain.mine(20)
    async with ReadsProxy(h.chain.url) as proxy:
        summary = await backfill_via(h, h.sessions, proxy)
    assert proxy.count("eth_getLogs") == 0
    assert (summary.blocks, summary.logs) == (h.chain.head() + 1, 0)


async def test_an_open_native_payment_keeps_every_header_read(h: Harness) -> None:
    sc = await scenario_in(h)
    async with ReadsProxy(h.chain.url) as proxy:
        await backfill_via(h, h.sessions, proxy)
    assert proxy.blocks_read >= set(range(h.chain.head() + 1))
    assert statuses(await snapshot(h.sessions), sc.payments) == sc.expected


async def test_a_deep_rerun_keeps_the_native_coin_credits_it_does_not_read(h: Harness) -> None:
    """The first run reads whole blocks (a native-coin payment is open); once it is
    confirmed, a rerun reads 0..99 as one deep range, never the native transfer's block: its
    credit stays."""
    sc = await scenario_in(h)
    h.chain.mine(100)
    async with ReadsProxy(h.chain.url) as proxy:
        await backfill_via(h, h.sessions, proxy, batch_size=100)
    first = await snapshot(h.sessions)
    assert statuses(first, sc.payments)["native"] == "confirmed"
    async with ReadsProxy(h.chain.url) as proxy:
        again = await backfill_via(h, h.sessions, proxy, batch_size=100)
    (native_block,) = [t["block_number"] for t in first["transactions"] if t["token_id"] is None]
    assert native_block not in proxy.blocks_read
    assert_same(await snapshot(h.sessions), first)
    assert again.events == 0


# -- logs read whole: sifted as they are parsed ---------------------------------------------------

NOBODY = "0x" + "5e" * 20  # paid, but no payment's address
WHOLE: dict[str, Any] = {"filter_recipients_max": 0}  # more addresses than the node is asked for
ZERO_DATA = "0x" + "00" * 32


class GarblingProxy(ReadsProxy):
    """The third topic of the logs to :data:`NOBODY` answered is no hex."""

    def rewrite(self, log: Json) -> None:
        topics = log["topics"]
        if len(topics) == 3 and topics[2].endswith(NOBODY[2:]):
            topics[2] = topics[2][:-2] + "zz"


def pay_nobody(h: Harness) -> None:
    """Transfers to an address no payment uses, one of value 0, among the scenario's."""
    for units in (7_000_000, 0, 1):
        pay(h, NOBODY, units)
    h.chain.mine(10)


async def test_logs_read_whole_are_counted_and_credited_as_when_each_is_decoded(
    h: Harness,
    other_engine: AsyncEngine,
    other_sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The logs to nobody watched are passed over as they are parsed: the rows, the events and
    what is counted (logs read, zero-value logs skipped) are those of a backfill that decodes
    every log against the payments of its ranges (no sieve)."""
    _, token_payments = await token_scenario(h, empty_blocks=10)
    pay_nobody(h)
    sifted, every = Metrics(), Metrics()
    async with ReadsProxy(h.chain.url) as proxy:
        summary = await backfill_via(h, h.sessions, proxy, metrics=sifted, **WHOLE)
    monkeypatch.setattr(backfill, "SIEVE_MAX", 0)  # too many addresses to sift by
    await ensure_tokens(other_sessions, h.chain_settings)
    await insert_specs(other_engine, token_payments)
    async with ReadsProxy(h.chain.url) as plain:
        decoded = await backfill_via(h, other_sessions, plain, metrics=every, **WHOLE)
    assert_same(await snapshot(h.sessions), await snapshot(other_sessions))
    zero = sum(1 for log in proxy.logs if log["data"] == ZERO_DATA)
    assert zero >= 1 and summary.logs == decoded.logs == len(proxy.logs) > summary.matched
    chain = h.chain_settings.name
    for metrics in (sifted, every):
        assert sample(metrics, "scanner_logs_processed_total", chain=chain) == len(proxy.logs)
        skipped = sample(metrics, "scanner_skipped_logs_total", chain=chain, reason="zero_value")
        assert skipped == zero


class TimedProxy(ReadsProxy):
    """When the first ``eth_getLogs`` came in."""

    first_read: float | None = None

    async def _answer_items(self, items: list[Json]) -> list[Json]:
        if self.first_read is None and any(i.get("method") == "eth_getLogs" for i in items):
            self.first_read = time.monotonic()
        return await super()._answer_items(items)


async def test_the_first_reads_go_out_while_a_large_book_is_walked(
    h: Harness,
    other_engine: AsyncEngine,
    other_sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With more addresses than ``filter_recipients_max``, the rest of the book is walked
    beside the first reads: they go out before the walk ends, their answers wait for it, and
    they are sifted by the whole book (the rows and events of the same backfill, its walk not
    slowed)."""
    _, token_payments = await token_scenario(h, empty_blocks=10)
    pay_nobody(h)
    walk, walked = payments.watched_addresses, []

    async def slow(session: AsyncSession, chain: str, limit: int, **kw: Any) -> set[str] | None:
        found = await walk(session, chain, limit, **kw)
        if limit == backfill.SIEVE_MAX:  # the whole walk, beside the reads
            await asyncio.sleep(0.5)
            walked.append(time.monotonic())
        return found

    monkeypatch.setattr(payments, "watched_addresses", slow)
    async with TimedProxy(h.chain.url) as proxy:
        await backfill_via(h, h.sessions, proxy, **WHOLE)
    assert proxy.first_read is not None and walked and proxy.first_read < walked[0] - 0.3
    monkeypatch.setattr(payments, "watched_addresses", walk)
    await ensure_tokens(other_sessions, h.chain_settings)
    await insert_specs(other_engine, token_payments)
    async with ReadsProxy(h.chain.url) as plain:
        await backfill_via(h, other_sessions, plain, **WHOLE)
    got = await snapshot(h.sessions)
    assert_same(got, await snapshot(other_sessions))
    assert len(got["transactions"]) >= 1


@pytest.mark.parametrize("sieve", [True, False], ids=["sifted", "decoded"])
async def test_a_garbled_recipient_of_a_log_read_whole_stops_the_backfill(
    h: Harness, monkeypatch: pytest.MonkeyPatch, sieve: bool
) -> None:
    """A third topic that is not hex may be a watched address, garbled: the answer is refused,
    whether the log would be passed over or decoded, and the range is not committed."""
    await token_scenario(h, empty_blocks=10)
    pay_nobody(h)
    if not sieve:
        monkeypatch.setattr(backfill, "SIEVE_MAX", 0)
    async with GarblingProxy(h.chain.url) as proxy:
        with pytest.raises(MalformedResponse, match="log topic"):
            await backfill_via(h, h.sessions, proxy, **WHOLE)
    garbled = [log for log in proxy.logs if log["topics"][-1].endswith("zz")]
    first = min(int(log["blockNumber"], 16) for log in garbled)
    stored = await snapshot(h.sessions)
    assert all(t["block_number"] < first for t in stored["transactions"])


BOB = "0x" + "b0" * 20


@pytest.mark.parametrize("sieve", [True, False], ids=["sifted", "decoded"])
async def test_a_block_named_by_logs_passed_over_alone_orphans_the_credit_it_replaced(
    h: Harness, monkeypatch: pytest.MonkeyPatch, sieve: bool
) -> None:
    """A rerun through a node on another fork, far below its head: there block N holds only a
    transfer to nobody watched, where the first run credited one to BOB. The log passed over
    still names block N by its hash on that fork, and the credit stored in the other is
    orphaned, as when every log is decoded."""
    if not sieve:
        monkeypatch.setattr(backfill, "SIEVE_MAX", 0)
    await ensure_tokens(h.sessions, h.chain_settings)
    h.chain.mine(5)
    t0 = h.now()
    await insert_specs(
        h.engine, [PaymentSpec("bob", str(uuid.uuid4()), BOB, "5", h.token, t0, t0 + 10_000)]
    )
    with DevChain.start() as fork:
        fork.rpc("anvil_loadState", [h.chain.rpc("anvil_dumpState")])
        pay(h, BOB, 5_000_000)
        fork.wait_receipt(fork.transfer(h.token, h.customer, NOBODY, 5_000_000))  # block N too
        h.chain.mine(10)
        fork.mine(10)
        async with ReadsProxy(h.chain.url) as proxy:
            await backfill_via(h, h.sessions, proxy, batch_size=20, **WHOLE)
        ((credit, block),) = [(t["status"], t["block_number"]) for t in await txs(h)]
        assert credit == "confirmed"
        async with ReadsProxy(fork.url) as proxy:
            await backfill_via(h, h.sessions, proxy, batch_size=20, **WHOLE)
    assert [log["blockNumber"] for log in proxy.logs if log["topics"][2].endswith("5e")] == [
        hex(block)
    ]
    assert block not in proxy.blocks_read  # far below the head: named by that log alone
    assert [t["status"] for t in await txs(h)] == ["orphaned"]


async def txs(h: Harness) -> list[dict[str, Any]]:
    return list((await snapshot(h.sessions))["transactions"])


# -- rows the gateway wrote wrong, tag mode ----------------------------------------------------


@pytest.mark.parametrize("address", ["0x1234", "TJRabPrwbZy45sbavfcjinPJC18kjpRTv8"])
async def test_a_row_with_an_unusable_address_does_not_stop_a_filtered_backfill(
    h: Harness, address: str
) -> None:
    """No log can pay it: the other payments' addresses alone are asked for (before
    c891b9b its address went into the topic filter, and the node refused every eth_getLogs)."""
    sc, token_payments = await token_scenario(h)
    await insert_specs(h.engine, [unpaid(address, token_payments[0])])
    async with ReadsProxy(h.chain.url) as proxy:
        await backfill_via(h, h.sessions, proxy)
    topics = sorted(recipient_topic(p.address) for p in token_payments)
    assert proxy.filters and all(sorted(recipients(f) or []) == topics for f in proxy.filters)
    assert statuses(await snapshot(h.sessions), token_payments) == expected(sc, token_payments)


async def test_in_tag_mode_expiries_judged_at_the_finalized_block_are_decided(
    h: Harness, other_engine: AsyncEngine, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """anvil's ``finalized`` (67: 64 below the head) is above the scenario and below the reorg
    window, inside the range 0..99: what expires by its time expires (before c891b9b the deep
    range did not read its time). Confirmations are not compared: in tag mode they depend on
    where commits end."""
    tags = {"confirmations": None, "finality": "finalized"}
    h.chain_settings = h.chain_settings.model_copy(update=tags)
    _, token_payments = await token_scenario(h, empty_blocks=10)
    h.chain.mine(100)
    async with ReadsProxy(h.chain.url) as proxy:
        await backfill_via(h, h.sessions, proxy, batch_size=100)
    assert set(range(67)) - proxy.blocks_read  # deep below the tag
    got = await snapshot(h.sessions)
    want = await reference(h, other_engine, other_sessions, token_payments, batch_size=100)
    assert statuses(got, token_payments) == statuses(want, token_payments)
    assert statuses(got, token_payments)["underpaid"] == "expired"
    assert got["events"] == want["events"]


async def _steps(
    delays: dict[int, float], linger: Any = None, concurrency: int = 4
) -> list[tuple[list[int], float]]:
    """The reads ``prefetch_ready`` yields, step by step, with when each step came (seconds);
    the read of range ``n`` takes ``delays[n]``."""

    async def fetch(start: int, end: int) -> int:
        await asyncio.sleep(delays[start])
        return start

    began = time.monotonic()
    steps: list[tuple[list[int], float]] = []
    ranges = [(n, n) for n in sorted(delays)]
    async with aclosing(prefetch_ready(ranges, fetch, concurrency, linger=linger)) as reads:
        async for batch in reads:
            steps.append((batch, time.monotonic() - began))
    return steps


async def test_reads_started_together_are_waited_for_a_little_and_yielded_together() -> None:
    """A commit that could join more reads waits, for a fraction of its first read's time, for
    the reads started with it: reads that come in together are one commit."""
    together = {0: 0.4, 1: 0.5, 2: 0.5, 3: 0.5}
    assert [b for b, _ in await _steps(together, linger=lambda _: 1.0)] == [[0, 1, 2, 3]]
    # the fraction of the first read's time is what is waited for, no more
    steps = await _steps({0: 0.4, 1: 1.0, 2: 1.0}, linger=lambda _: 0.1)
    assert steps[0][0] == [0] and steps[0][1] < 0.9
    assert [b for b, _ in steps] == [[0], [1, 2]]


async def test_a_read_that_stalls_is_not_waited_for_past_the_linger() -> None:
    """The reads already in go on at once when the next one stalls: a node that stalls costs
    no work already read, and no wait beyond the linger."""
    steps = await _steps({0: 0.2, 1: 1.5, 2: 0.2}, linger=lambda _: 0.25)
    assert steps[0][0] == [0] and steps[0][1] < 0.8
    assert [b for b, _ in steps] == [[0], [1, 2]]
    no_wait = await _steps({0: 0.1, 1: 0.6}, linger=lambda _: 0.0)  # nothing to join
    assert no_wait[0][0] == [0] and no_wait[0][1] < 0.5


async def test_a_read_that_failed_is_raised_after_the_reads_before_it_are_yielded() -> None:
    """Reads already in before a failed one are still committed: the failure is raised at its
    own turn (the job resumes there)."""

    async def fetch(start: int, end: int) -> int:
        await asyncio.sleep({0: 0.3, 1: 0.0, 2: 0.1}[start])
        if start == 2:
            raise ValueError("the read failed")
        return start

    got: list[list[int]] = []
    reads = prefetch_ready([(0, 0), (1, 1), (2, 2)], fetch, 4, linger=lambda _: 0.5)
    with pytest.raises(ValueError, match="the read failed"):
        async with aclosing(reads) as steps:
            async for batch in steps:
                got.append(batch)
    assert got == [[0, 1]]


def test_a_commit_lingers_only_where_a_read_like_its_first_could_be_joined() -> None:
    """Reads sifted to a few logs wait for the reads under way; a read that fills half a
    commit's logs or blocks does not (the next one could not be joined: the deposit workload's
    reads of 20,000 logs each)."""

    def read(blocks: int, logs: int) -> RangeData:
        return RangeData(1, blocks, (), tuple({} for _ in range(logs)))  # type: ignore[typeddict-item]

    most = 5_000
    assert backfill.linger(read(500, 100), most) == backfill.LINGER > 0
    assert backfill.linger(read(500, backfill.COMMIT_LOGS // 2), most) == backfill.LINGER
    assert backfill.linger(read(500, backfill.COMMIT_LOGS // 2 + 1), most) == 0
    assert backfill.linger(read(1_000, backfill.COMMIT_LOGS), most) == 0
    assert backfill.linger(read(most // 2 + 1, 10), most) == 0
