"""Payments written behind the cursor: look back for them, once.

The gateway's clock, a slow commit or a scanner catching up can put a payment's ``created_at``
before blocks the scanner has already passed. Each payment is looked at once (``seen_at_block``
records the cursor at that moment), a page at a time: if the cursor had passed ``created_at −
grace``, its address's Transfer logs are read again from that time to the cursor (see
scan/lookback.py: bounded by ``catch_up_max_blocks``, never stalled by a block the node cannot
show), and applied through the same batch rules. A payment the scanner cannot use (bad address,
more decimals than its token) gets one ``invalid_payment`` event and is left alone. One whose
credit rows cannot be read (edited by hand) stays unseen, and is looked back for again
:data:`LEFT_ALONE_RETRY` seconds later, until they are fixed; the pass that leaves it alone
reads on past it, page after page.

Native-coin payments are looked back for too, by reading the blocks since ``created_at − grace``
again in full, a hundred at a time (top-level transfers to their addresses, receipts checked).

The live scan runs this beside its ranges (a task of its own): a million unseen rows never hold up
a new block. Each page commits under the chain's lock, after checking that the cursor still
covers its window and that the stored blocks still name the hashes it read (a reorg rewound and
rescanned meanwhile: the page is looked at again). A :class:`BookGuard` orders a page's commit
with the scan's writes that make rows unseen again (an edit followed, a token enabled): a page
read before such a write marks nothing after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scanner.chain.reader import ChainReader
from scanner.core.model import Header, Log, Transfer
from scanner.core.plan import CATCH_UP, invalid_outbox
from scanner.core.ranges import RangeSizer
from scanner.db import cursor, events, payments
from scanner.db.payments import RawPayment
from scanner.observe.metrics import Metrics, NullMetrics
from scanner.scan.batch import run_range
from scanner.scan.context import ChainContext, lock_chain
from scanner.scan.fetch import RangeData
from scanner.scan.lookback import Start, block_at_time, read_window, window_headers
from scanner.scan.report import report_batch
from scanner.scan.rows import PaymentRow, read_rows

log = structlog.get_logger(__name__)


# While the live scan is behind the head, the look rests this many times as long as its last
# page took before the next one (at most a tenth of the time; it goes on at once when the scan
# reaches the head). The scan gains little while a page runs (the page's rows are read and
# checked on the scan's event loop, and its commit holds the chain's lock while PostgreSQL
# updates 2,000 rows and their index entries), so the look's share of the time is about what
# a block costs more (bench/README.md: five times a page cost a PostgreSQL block 13-16%
# more, ten times 4-6%).
REST_FACTOR = 10.0
# A payment a look-back left alone (one of its credit rows unreadable: edited by hand) stays
# unseen, and is looked back for again this many seconds later, until the row is fixed: its
# address's logs are not read again on every tick meanwhile.
LEFT_ALONE_RETRY = 60.0


@dataclass(slots=True)
class BookGuard:
    """Held by a page's commit, and by each write that makes rows unseen again; such a write
    adds one to ``generation`` (under the lock), so a page read before it marks nothing.
    ``idle`` is set while the live scan stands at the head: the look then takes page after
    page; else it rests between pages, and new blocks go first."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    generation: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    # rows left alone (ids as stored) → when they are looked back for again (monotonic)
    left_alone: dict[Any, float] = field(default_factory=dict)

    def waiting(self) -> set[Any]:
        """The rows left alone that are not looked back for yet."""
        now = time.monotonic()
        return {key for key, again in self.left_alone.items() if again > now}

    def leave(self, keys: set[Any], looked: Sequence[Any]) -> None:
        """``keys`` were left alone by a look-back (again later); ``looked`` were looked at."""
        for key in looked:
            self.left_alone.pop(key, None)
        again = time.monotonic() + LEFT_ALONE_RETRY
        self.left_alone.update(dict.fromkeys(keys, again))

    async def rest(self, spent: float) -> None:
        """After a page that took ``spent`` seconds: nothing while the scan is idle, else up
        to ``REST_FACTOR × spent``, ended early when the scan reaches the head."""
        if self.idle.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REST_FACTOR * spent):
                await self.idle.wait()


async def catch_up(
    sessions: async_sessionmaker[AsyncSession],
    reader: ChainReader,
    ctx: ChainContext,
    *,
    metrics: Metrics | None = None,
    page: int = payments.UNSEEN_PAGE,
    guard: BookGuard | None = None,
) -> int:
    """Look at every payment not yet seen, ``page`` rows at a time (memory follows the page,
    not the book); return how many were looked back for."""
    tally = metrics or NullMetrics()
    total = marked = 0
    previous: set[Any] = set()
    passed: set[Any] = set()  # rows this pass left alone: its next pages read past them
    resting = guard is not None
    guard = guard if guard is not None else BookGuard()
    while True:
        started = time.monotonic()
        looked, keys, left = await _catch_up_page(
            sessions, reader, ctx, tally, (page, guard, passed)
        )
        total, marked = total + looked, marked + len(keys)
        passed |= left
        if len(keys) + len(left) < page or not previous.isdisjoint(keys):
            break  # the last page; or rows not marked seen after all: no loop on them
        previous = set(keys)
        if resting:
            await guard.rest(time.monotonic() - started)
    if marked >= payments.VACUUM_AFTER:
        await payments.vacuum(sessions, ctx.name, marked)
    return total


async def _catch_up_page(
    sessions: async_sessionmaker[AsyncSession],
    reader: ChainReader,
    ctx: ChainContext,
    metrics: Metrics,
    paging: tuple[int, BookGuard, set[Any]],
) -> tuple[int, list[Any], set[Any]]:
    """One page, read past the rows left alone (those waiting for their next look, and those
    of ``passed``): (how many were looked back for, the keys of the rows marked seen, the keys
    of the rows left alone)."""
    page, guard, passed = paging
    generation = guard.generation
    async with sessions() as session:
        rows = await payments.unseen(session, ctx.name, page, skip=guard.waiting() | passed)
        at = await cursor.get_cursor(session, ctx.name) if rows else None
        if at is None:
            return 0, [], set()
        low = at.block - ctx.rules.keep_blocks
        window = await cursor.stored_headers(session, ctx.name, low, at.block)
    now_block = at.block
    known = {h.number: h.timestamp for h in window}
    usable, invalid = read_rows(rows, ctx)
    behind = _behind(ctx, usable, known.get(now_block))
    data = await _look_back(reader, ctx, behind, now_block, window, metrics) if behind else None
    if data is not None and not _agrees(data, window):
        log.info("catch_up_deferred", chain=ctx.name, reason="block hashes changed")
        return 0, [], set()  # a reorg is under way: the live tick walks back first
    async with guard.lock:
        if guard.generation != generation:
            return 0, [], set()  # rows made unseen again meanwhile: looked at on the next pass
        left_alone = await _commit(sessions, ctx, rows, invalid, data, now_block, known, metrics)
        if left_alone is None:
            return 0, [], set()
        guard.leave(left_alone, [r.key for r in rows])
    behind = [r for r in behind if r.key not in left_alone]
    if behind:
        log.info("payments_caught_up", chain=ctx.name, payments=len(behind), to_block=now_block)
    return len(behind), [r.key for r in rows if r.key not in left_alone], left_alone


def _behind(
    ctx: ChainContext, rows: Sequence[PaymentRow], reference: int | None
) -> list[PaymentRow]:
    """The rows created (less the grace) no later than the cursor's block."""
    if reference is None:
        return []
    return [r for r in rows if r.created_at - ctx.grace <= reference]


async def _commit(
    sessions: async_sessionmaker[AsyncSession],
    ctx: ChainContext,
    rows: Sequence[RawPayment],
    invalid: dict[Any, str],
    data: RangeData | None,
    now_block: int,
    known: Mapping[int, int],
    metrics: Metrics,
) -> set[Any] | None:
    """Apply the look-back and mark the rows seen, in one transaction, but those it left alone
    (a credit row unreadable: they stay unseen, looked back for again until it is fixed); the
    keys of those. None when the cursor went back meanwhile or the stored blocks no longer name
    what was read (a reorg, maybe rescanned since: look again next tick)."""
    async with sessions() as session, session.begin():
        await lock_chain(session, ctx)  # fenced: a live scan's
        again = await cursor.get_cursor(session, ctx.name)
        if data is not None and (again is None or again.block < now_block):
            return None
        if data is not None and not await _still_stored(session, ctx, data, again):
            return None
        await _report_invalid(session, ctx, invalid, metrics)
        left_alone: set[Any] = set()
        if data is not None:
            result = await run_range(
                session, ctx, data, CATCH_UP, tag_block=None, below=known, checked_floor=now_block
            )
            report_batch(log.bind(chain=ctx.name), metrics, ctx.name, result, 0.0, ctx.kind)
            left_alone = set(result.look_back)
        seen = [r.key for r in rows if r.key not in left_alone]
        await payments.mark_seen(session, seen, now_block)
    return left_alone


async def _report_invalid(
    session: AsyncSession, ctx: ChainContext, invalid: dict[Any, str], metrics: Metrics
) -> None:
    """One ``invalid_payment`` event per row (written against the id as stored), a log and a
    count."""
    for key, reason in invalid.items():
        log.warning("payment_invalid", chain=ctx.name, payment_id=str(key), reason=reason)
        metrics.invalid_rows.labels(ctx.name, "payments").inc()
    await events.append(session, [invalid_outbox(key, reason) for key, reason in invalid.items()])


async def _still_stored(
    session: AsyncSession, ctx: ChainContext, data: RangeData, at: cursor.Cursor | None
) -> bool:
    """Inside the commit: the stored blocks (as the scan keeps them now) still agree with the
    looked-back logs."""
    if at is None:
        return False
    low = at.block - ctx.rules.keep_blocks
    return _agrees(data, await cursor.stored_headers(session, ctx.name, low, at.block))


def _agrees(data: RangeData, window: Sequence[Header]) -> bool:
    """The looked-back logs name the block hashes the live scan stored (where it still has them)
    and the headers read for them."""
    stored = {h.number: h.hash for h in window}
    read = {h.number: h.hash for h in data.headers}
    named = [(int(e["blockNumber"], 16), str(e["blockHash"]).lower()) for e in data.logs]
    named += [(t.block_number, t.block_hash) for t in data.native]
    return all(
        read.get(number) == block_hash and stored.get(number, block_hash) == block_hash
        for number, block_hash in named
    )


async def _look_back(
    reader: ChainReader,
    ctx: ChainContext,
    rows: Sequence[PaymentRow],
    cursor: int,
    window: Sequence[Header],
    metrics: Metrics,
) -> RangeData | None:
    known = {h.number: h.timestamp for h in window}
    stored = {h.number: h for h in window}
    sizer = RangeSizer(cursor + 1)  # the whole window in one call, unless the node refuses
    floor = max(0, cursor - ctx.catch_up_max_blocks)
    earliest, headers = cursor, dict[int, Header]()
    logs: list[Log] = []
    native: list[Transfer] = []
    for token, addresses in _since(ctx, rows).items():
        start = await block_at_time(reader, min(addresses.values()), cursor, known, floor=floor)
        start, found, paid = await read_window(reader, token, addresses, start, cursor, sizer)
        start, found, paid, read = await window_headers(
            reader, start, cursor, (found, paid), stored
        )
        logs.extend(found)
        native.extend(paid)
        headers.update((h.number, h) for h in read)
        earliest = min(earliest, start.block)
        if start.truncated is not None:
            await _report_truncated(reader, ctx, token, rows, (start, known), metrics)
    if not logs and not native:
        return None
    ordered = tuple(headers[n] for n in sorted(headers))
    return RangeData(earliest, cursor, ordered, tuple(logs), tuple(native))


def _since(ctx: ChainContext, rows: Sequence[PaymentRow]) -> dict[str | None, dict[str, float]]:
    """Per token (None: the native coin), each address's earliest ``created_at − grace``."""
    by_token: dict[str | None, dict[str, float]] = defaultdict(dict)
    tokens = ctx.token_by_id()
    for row in rows:
        token = tokens[row.token_id].address if row.token_id is not None else None
        since = row.created_at - ctx.grace
        address = row.address.lower()
        by_token[token][address] = min(since, by_token[token].get(address, since))
    return by_token


async def _report_truncated(
    reader: ChainReader,
    ctx: ChainContext,
    token: str | None,
    rows: Sequence[PaymentRow],
    truncated: tuple[Start, Mapping[int, int]],
    metrics: Metrics,
) -> None:
    """One ``catch_up_truncated`` warning and count per payment whose look-back should have
    started before ``start``: transfers to it before that block are not looked for. The start
    block's time comes from the stored blocks (``known``) when they hold it, else from the node
    (which showed it)."""
    start, known = truncated
    at = known.get(start.block)
    if at is None:
        at = (await reader.headers(start.block, start.block))[0].timestamp
    tokens = ctx.token_by_id()
    for row in rows:
        row_token = tokens[row.token_id].address if row.token_id is not None else None
        if row_token != token or row.created_at - ctx.grace >= at:
            continue
        log.warning(
            "catch_up_truncated",
            chain=ctx.name,
            payment_id=str(row.key),
            address=ctx.kind.show(row.address),
            from_block=start.block,
            reason=start.truncated,
            detail=start.detail,
        )
        metrics.catch_up_truncated.labels(ctx.name, start.truncated).inc()
