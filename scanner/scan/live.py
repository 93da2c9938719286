"""The live scan of one chain: tick after tick from the cursor to the head.

A tick reads the head, reads the ranges up to the head (several at once, bounded) and commits them
one by one, in order, each with the cursor in the same transaction; payments written behind the
cursor are looked for beside it (scan/catchup.py, a task of its own). A reorg found on the way
rewinds the cursor and the next tick rescans. A tick with no new block checks that the cursor's
block is still the node's (a reorg that keeps the height leaves no new block whose parent hash
would tell).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import aclosing
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.model import Header
from scanner.core.plan import LIVE
from scanner.core.ranges import split_range
from scanner.db import cursor as stored
from scanner.db import payments
from scanner.db.locks import chain_xact_lock
from scanner.errors import CursorMoved, PaymentLocked, ReorgDetected, RpcError
from scanner.scan.batch import BatchReport, run_edits, run_range, run_tick, verify_links
from scanner.scan.catchup import BookGuard, catch_up
from scanner.scan.context import ChainContext
from scanner.scan.crosscheck import cross_check
from scanner.scan.fetch import (
    NativeWatch,
    RangeData,
    fetch_deep,
    fetch_range,
    watches_none,
)
from scanner.scan.native import native_watch
from scanner.scan.parts import ChainParts, OnChain
from scanner.scan.pipeline import prefetch
from scanner.scan.reorg import find_ancestor, rewind, stored_window
from scanner.scan.report import report_batch
from scanner.scan.startup import prepare_chain
from scanner.scan.tokens import TokenWatch

# The open-payments gauge counts the whole book: at most once this often, between ticks, never
# as part of one.
OPEN_COUNT_EVERY = 5.0


@dataclass(frozen=True, slots=True)
class TickOutcome:
    head: int
    cursor: int
    ranges: int = 0
    reorg: bool = False
    waiting: bool = False

    @property
    def caught_up(self) -> bool:
        return self.waiting or (self.cursor >= self.head and not self.reorg)


def _cut_near_head(span: tuple[int, int], head: int, near: int) -> list[tuple[int, int]]:
    """A range ending within ``near`` blocks of the head (the chain's reorg window) reads its
    logs block by block (by hash, one call a block). When it also holds at least ``near``
    blocks farther back (a catch-up), those are cut off into a range of their own, read by
    number, so that only the last blocks go one by one."""
    start, stop = span
    far = head - near  # ranges ending here or below are read by number
    if stop <= far or far - start + 1 < near:
        return [span]
    return [(start, far), (far + 1, stop)]


class ChainScanner(OnChain):
    """Scans one chain; ``tick`` is one step, ``scan_until_head`` drives it in tests."""

    def __init__(self, parts: ChainParts) -> None:
        super().__init__(parts, __name__)
        self._ctx: ChainContext | None = None
        self.head = -1
        self.cursor = -1
        self.stopping = parts.stopping
        self.read_head = parts.read_head or parts.reader.head
        self.verifier = parts.verifier
        self.sweep = parts.sweep
        self.clock = parts.clock
        self.tokens = TokenWatch(parts.name, parts.reader, parts.metrics, parts.kind)
        self._open_counted_at = -OPEN_COUNT_EVERY
        self._tag: Header | None = None  # the tick's finality tag block (tag mode)
        self.catch_up_page = payments.UNSEEN_PAGE
        self._book: asyncio.Task[int] | None = None  # the look at unseen payments, beside
        self._guard = BookGuard()

    @property
    def prepared(self) -> bool:
        return self._ctx is not None

    @property
    def ctx(self) -> ChainContext:
        if self._ctx is None:
            raise RuntimeError("prepare() first")
        return self._ctx

    async def prepare(self) -> None:
        """Chain id, tokens, cursor; raises ChainHalted when the chain must not scan."""
        ctx, self.cursor = await prepare_chain(self.sessions, self.reader, self.settings)
        # the catch-up's transactions are fenced too; an expiry waits for a sweep that runs
        self._ctx = replace(
            ctx, fence=self.fence, idle_seconds=self.idle_seconds, sweeps=self.sweep is not None
        )
        await self._refresh_tokens()
        self.log.info("chain_prepared", cursor=self.cursor, tokens=len(self.ctx.tokens))

    async def _refresh_tokens(self) -> None:
        """The tokens table, live: rows read every tick; a token enabled since the last one has
        its open payments looked back for (its logs were not read while it was off)."""
        async with self._guard.lock, self.sessions() as session, session.begin():
            tokens, enabled = await self.tokens.refresh(session)
            if enabled:
                keys = [info.key if info.key is not None else info.id for info in enabled]
                again = await payments.look_back_for_tokens(session, self.name, keys)
                self._guard.generation += 1
                shown = [self.ctx.kind.show(t.address) for t in enabled]
                self.log.info("tokens_enabled", tokens=shown, payments=again)
        if tokens != dict(self.ctx.tokens):
            self._ctx = replace(self.ctx, tokens=tokens)
            self.log.info("tokens_changed", tokens=sorted(map(self.ctx.kind.show, tokens)))

    async def _lock(self, session: AsyncSession) -> None:
        """The chain's transaction lock, then the fence (this process still holds the chain)."""
        await chain_xact_lock(session, self.name, idle_seconds=self.idle_seconds)
        if self.fence is not None:
            await self.fence(session)

    async def _hold(self, session: AsyncSession, block: int) -> stored.Cursor | None:
        """The chain's lock and fence, then the stored cursor if it still stands at ``block``
        (None: another writer moved it since this process read it)."""
        await self._lock(session)
        at = await stored.get_cursor(session, self.name)
        return at if at is not None and at.block == block else None

    async def tick(self) -> TickOutcome:
        """One step; a payment row the gateway holds locked is reported, then raised (the
        chain's loop retries with backoff)."""
        try:
            outcome = await self._tick()
        except PaymentLocked as exc:
            self._report_locked(exc)
            raise
        if self.sweep is not None and not (outcome.waiting or self.stopping()):
            await self.sweep.run(self.ctx, outcome.cursor, self._tag)
        return outcome

    async def _tick(self) -> TickOutcome:
        head = await self.read_head()
        cursor, cursor_hash = await self._read_cursor()
        self.head, self.cursor = head, cursor
        self._progress()
        if head < cursor:
            self.log.warning("node_behind_cursor", head=head, cursor=cursor)
            return TickOutcome(head, cursor, waiting=True)
        tag = self._tag = await self._tag_header()
        await self._refresh_tokens()
        await self._follow_edits(cursor, tag)  # an edited row is then looked back for again
        self._look_at_book()
        if self.verifier is not None:  # confirmed by the plan of this tick's ranges or the next
            final = self.ctx.rules.finality(cursor, tag.number if tag else None, {})
            await self.verifier.run(self.ctx, final.final_block)
        end = min(head, cursor + self.sizer.size * self.settings.concurrency)
        self._scan_idle(end <= cursor)
        if end <= cursor:
            if await self._tip_replaced(cursor, cursor_hash):
                await self.handle_reorg(cursor, tag)
                return TickOutcome(head, self.cursor, reorg=True)
            await self._advance_only(cursor, tag)
            return TickOutcome(head, cursor)
        return await self._scan(cursor, end, head, tag)

    def _report_locked(self, exc: PaymentLocked) -> None:
        ids = [str(k) for k in exc.keys]
        self.log.warning("payment_locked", payment_ids=ids, cursor=self.cursor)
        self.metrics.payment_locked.labels(self.name).inc()

    def _look_at_book(self) -> None:
        """Start the look at unseen payments beside the scan, unless one runs; raise what the
        last one raised, but a node's trouble (logged: that look waits for the next pass)."""
        done = self._book
        if done is not None and not done.done():
            return
        self._book = None
        try:
            if done is not None:
                done.result()
        except RpcError as exc:
            self.log.warning("catch_up_failed", error=type(exc).__name__, message=str(exc))
        self._book = asyncio.create_task(
            catch_up(
                self.sessions,
                self.reader,
                self.ctx,
                metrics=self.metrics,
                page=self.catch_up_page,
                guard=self._guard,
            )
        )

    def _scan_idle(self, idle: bool) -> None:
        """At the head the look goes on at full speed; behind it, new blocks go first."""
        (self._guard.idle.set if idle else self._guard.idle.clear)()

    async def book_looked_at(self) -> int:
        """Wait for the look under way (raising what it raised); how many it looked back for."""
        task, self._book = self._book, None
        try:
            return await task if task is not None else 0
        except PaymentLocked as exc:
            self._report_locked(exc)
            raise

    async def stop_book(self) -> None:
        """Cancel the look under way (chain given up, process stopping): its page rolls back."""
        task, self._book = self._book, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def scan_until_head(self, max_ticks: int = 100_000) -> TickOutcome:
        """Tick until the cursor stands at the head and the look at unseen payments ended
        (tests and the demo call this)."""
        outcome = await self.tick()
        for _ in range(max_ticks):
            if outcome.caught_up and not await self.book_looked_at():
                return outcome  # (a look that credited something: its statuses move next tick)
            outcome = await self.tick()
        return outcome

    async def _scan(self, cursor: int, end: int, head: int, tag: Header | None) -> TickOutcome:
        deep_to = self.ctx.deep_end(head, tag.number if tag else None)
        near = self.ctx.reorg_depth  # a replica may lag: inside the window, logs by block hash
        ranges = [
            piece
            for span in split_range(cursor + 1, end, self.sizer.size)
            for piece in _cut_near_head(span, head, near)
        ]
        native, done = await self._native_watched(), 0

        async def fetch(start: int, stop: int) -> RangeData:
            if stop <= deep_to and watches_none(native):
                tokens, required = self.ctx.token_addresses, self.ctx.required
                return await fetch_deep(
                    self.reader, tokens, start, stop, required=required, sizer=self.sizer
                )
            data = await fetch_range(
                self.reader,
                self.ctx.token_addresses,
                start,
                stop,
                native_watched=native,
                sizer=self.sizer,
                by_hash=head - stop < near,
            )
            return await cross_check(self.reader, self.ctx, data, self.metrics)  # TRON

        try:
            async with aclosing(prefetch(ranges, fetch, self.settings.concurrency)) as stream:
                async for data in stream:
                    await self._commit(data, tag)
                    done += 1
                    if self.stopping():
                        break
        except ReorgDetected as exc:
            await self.handle_reorg(exc.block, tag)
            return TickOutcome(head, self.cursor, done, reorg=True)
        except CursorMoved:
            self.log.info("cursor_moved_elsewhere")
        return TickOutcome(head, self.cursor, done)

    async def _commit(self, data: RangeData, tag: Header | None) -> BatchReport:
        started = time.perf_counter()
        async with self.sessions() as session, session.begin():
            at = await self._hold(session, data.start - 1)
            if at is None:
                raise CursorMoved()
            low = data.start - self.ctx.reorg_depth - 1
            below = await stored.stored_timestamps(session, self.name, low, data.start - 1)
            verify_links(data, at.linked)
            if tag is not None:
                below[tag.number] = tag.timestamp
            result = await run_range(
                session,
                self.ctx,
                data,
                LIVE,
                tag_block=tag.number if tag else None,
                below=below,
                node_hashes=self.reader.hashes_at,
            )
            if self.fence is not None:  # again, last: a holder frozen meanwhile commits nothing
                await self.fence(session)
        self.cursor = data.end
        self._progress()
        report_batch(
            self.log, self.metrics, self.name, result, time.perf_counter() - started, self.ctx.kind
        )
        return result

    async def _timestamps(
        self, session: AsyncSession, cursor: int, tag: Header | None
    ) -> dict[int, int]:
        """Stored block times of the reorg window below ``cursor``, and the tag block's."""
        low = cursor - self.ctx.reorg_depth
        timestamps = await stored.stored_timestamps(session, self.name, low, cursor)
        if tag is not None:
            timestamps[tag.number] = tag.timestamp
        return timestamps

    async def _follow_edits(self, cursor: int, tag: Header | None) -> None:
        """Recompute the payments the gateway edited (a page a tick), against the cursor."""
        async with self.sessions() as session:
            if not await payments.any_edited(session, self.name):
                return
        async with self._guard.lock, self.sessions() as session, session.begin():
            if await self._hold(session, cursor) is None:
                return  # another writer moved it: next tick
            self._guard.generation += 1  # edited rows become unseen: pages read before wait
            result = await run_edits(
                session,
                self.ctx,
                checked=cursor,
                tag_block=tag.number if tag else None,
                timestamps=await self._timestamps(session, cursor, tag),
            )
        if result is not None:
            report_batch(self.log, self.metrics, self.name, result, 0.0, self.ctx.kind)

    async def _advance_only(self, cursor: int, tag: Header | None) -> None:
        async with self.sessions() as session, session.begin():
            await self._lock(session)
            timestamps = await self._timestamps(session, cursor, tag)
            result = await run_tick(
                session,
                self.ctx,
                checked=cursor,
                tag_block=tag.number if tag else None,
                timestamps=timestamps,
            )
        if result.events:
            report_batch(self.log, self.metrics, self.name, result, 0.0, self.ctx.kind)

    async def count_open_payments(self) -> None:
        """The open-payments gauge, refreshed at most every OPEN_COUNT_EVERY seconds: a count
        of the whole book, so never part of a tick (the app calls it between ticks)."""
        if self.clock() - self._open_counted_at < OPEN_COUNT_EVERY:
            return
        self._open_counted_at = self.clock()
        async with self.sessions() as session:
            open_count = await payments.count_open(session, self.name)
        self.metrics.set_open_payments(self.name, open_count)

    async def handle_reorg(self, block: int, tag: Header | None) -> None:
        """Walk back to the common ancestor and rewind, in one transaction."""
        async with self.sessions() as session:
            at = await stored.get_cursor(session, self.name)
            cursor = at.block if at else self.cursor
            window = await stored_window(session, self.ctx, cursor)
        ancestor = await find_ancestor(self.reader, self.ctx, window)
        async with self.sessions() as session, session.begin():
            if await self._hold(session, cursor) is None:
                return
            outcome = await rewind(
                session,
                self.ctx,
                cursor=cursor,
                ancestor=ancestor,
                tag_block=tag.number if tag else None,
            )
        self.cursor = ancestor
        self.metrics.reorg_detected(self.name, outcome.depth)
        self.log.warning(
            "reorg_detected",
            at_block=block,
            depth=outcome.depth,
            old_cursor=cursor,
            ancestor=ancestor,
            orphaned=outcome.orphaned,
        )
        report_batch(self.log, self.metrics, self.name, outcome.report, 0.0, self.ctx.kind)

    async def _tip_replaced(self, cursor: int, cursor_hash: str | None) -> bool:
        """With no new block to link to, whether the node replaced the cursor's block (a reorg
        at the same height): confirmations count against that block, so it is checked again."""
        if cursor_hash is None:
            return False
        (header,) = await self.reader.headers(cursor, cursor)
        return header.hash != cursor_hash

    async def _read_cursor(self) -> stored.Cursor:
        """The stored cursor. A row the database no longer has (a failover to a standby that
        never got the chain's first commits) is made again as a first start makes it: the cursor
        this process holds is ahead of the database and never stands in for it."""
        async with self.sessions() as session:
            at = await stored.get_cursor(session, self.name)
        if at is None:
            self.log.warning("cursor_missing", cursor=self.cursor)
            await self.prepare()
            async with self.sessions() as session:
                at = await stored.get_cursor(session, self.name)
        if at is None:
            raise CursorMoved("the chain's cursor is not in the database")
        return at

    async def _tag_header(self) -> Header | None:
        if self.ctx.tag is None:
            return None
        number = await self.reader.tag_block(self.ctx.tag)
        return (await self.reader.headers(number, number))[0]

    async def _native_watched(self) -> NativeWatch:
        return await native_watch(self.sessions, self.name, self.ctx.kind)

    def _progress(self) -> None:
        if self.head >= 0:
            self.metrics.progressed(self.name, head=self.head, cursor=self.cursor)
