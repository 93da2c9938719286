"""``scanner backfill``: the live pipeline over a fixed range, resumable, beside the live scan.

Ranges are read concurrently (bounded) and committed strictly in order, each with the job's
progress (``backfill_jobs.next_block``) in the same transaction, so an interrupted backfill rerun
with the same arguments continues where it stopped. It never moves the live cursor and never
stores block hashes (those belong to the live scan's reorg window); it links each range to the one
before it by parent hash. Confirmations count from the higher of the live cursor and the newest
block the backfill verified itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass, field
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.chain.reader import Sieve
from scanner.core.decode import watched_topics
from scanner.core.model import Header
from scanner.core.plan import BACKFILL, DRY_RUN
from scanner.core.ranges import split_range
from scanner.db import cursor, jobs, payments, scratch
from scanner.db.locks import COMMAND_IDLE_SECONDS, chain_xact_lock
from scanner.errors import BackfillJobLost, ConfigError
from scanner.scan.batch import BatchReport, run_range, verify_links, verify_stored
from scanner.scan.context import ChainContext
from scanner.scan.fetch import (
    NativeWatch,
    RangeData,
    fetch_deep,
    fetch_range,
    joined,
    recipient_topic,
    watches_none,
)
from scanner.scan.native import native_watch
from scanner.scan.parts import ChainParts, OnChain
from scanner.scan.pipeline import prefetch_ready
from scanner.scan.report import report_batch
from scanner.scan.startup import check_chain_id, sync_tokens

log = structlog.get_logger(__name__)
FILTERED_SPAN = 10  # batch sizes one commit spans when eth_getLogs is filtered by recipient
SIEVE_MAX = 200_000  # watched addresses whole answers are sifted by as they are parsed (~30 MB)
COMMIT_LOGS = 20_000  # logs one commit holds at most when it joins several reads
#: how long a commit that could join a read like its first one waits for the reads under way, as
#: a fraction of the time its first read took (reads started together come in together)
LINGER = 0.25


@dataclass(slots=True)
class BackfillSummary:
    chain: str
    from_block: int
    to_block: int
    resumed_from: int
    blocks: int = 0
    logs: int = 0
    matched: int = 0
    payments_changed: int = 0
    events: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    status_changes: dict[str, int] = field(default_factory=dict)
    changed_ids: set[UUID] = field(default_factory=set, repr=False)

    def add(self, result: BatchReport) -> None:
        self.blocks += result.end - result.start + 1
        self.logs += result.logs
        self.matched += result.matched
        self.events += len(result.events)
        self.changed_ids.update(e.payment_id for e in result.events)
        self.payments_changed = len(self.changed_ids)  # distinct payments, over every range
        for _, to in result.status_changes:
            self.status_changes[to] = self.status_changes.get(to, 0) + 1

    def absorb(self, other: BackfillSummary) -> None:
        """Another job's totals (a split backfill)."""
        self.blocks += other.blocks
        self.logs += other.logs
        self.matched += other.matched
        self.events += other.events
        self.changed_ids |= other.changed_ids
        self.payments_changed = len(self.changed_ids)
        for to, n in other.status_changes.items():
            self.status_changes[to] = self.status_changes.get(to, 0) + n


Progress = Callable[[BackfillSummary, int], None]


def check_bounds(from_block: int, to_block: int) -> None:
    """What can be said of a range without asking the node (the CLI checks it first)."""
    if from_block < 0 or to_block < 0:
        raise ConfigError("block numbers must not be negative", key="--from-block")
    if from_block > to_block:
        raise ConfigError(
            f"--from-block {from_block} is after --to-block {to_block}", key="--from-block"
        )


def validate_range(from_block: int, to_block: int, head: int) -> None:
    check_bounds(from_block, to_block)
    if to_block > head:
        raise ConfigError(f"--to-block {to_block} is past the node's head {head}", key="--to-block")


class Backfill(OnChain):
    def __init__(self, parts: ChainParts, *, dry_run: bool = False) -> None:
        super().__init__(parts, __name__)
        self.dry_run = dry_run
        self._dry_session: AsyncSession | None = None
        self._head = -1  # the node's head as the run began
        self._from = 0  # the run's first block (a split backfill's whole range)
        self._first = 0  # the first block these reads begin at (a resumed job's, a split job's)
        self._tag: int | None = None  # and its finality tag's block (tag mode)
        self._walks: list[asyncio.Future[frozenset[str] | None]] = []  # books walked beside reads
        # A split backfill's worker (scanner.scan.split): each commit is fenced by its job lease.
        self.worker: str | None = None
        self.before_commit: Callable[[], Awaitable[None]] | None = None  # waits for its turn

    async def run(
        self, from_block: int, to_block: int, progress: Progress | None = None
    ) -> BackfillSummary:
        await check_chain_id(self.reader, self.settings)
        await self.check_range(from_block, to_block)
        async with self._dry_run():
            ctx, next_block = await self._begin(from_block, to_block)
            summary = BackfillSummary(
                self.settings.name, from_block, to_block, next_block, dry_run=self.dry_run
            )
            started = time.perf_counter()
            if next_block <= to_block:
                await self._scan(ctx, next_block, to_block, summary, progress)
            summary.seconds = time.perf_counter() - started
        if not self.dry_run:
            async with self._transaction() as session:
                await jobs.finish(session, self.settings.name, from_block, to_block)
        return summary

    async def check_range(self, from_block: int, to_block: int) -> None:
        """The range against the node's head, which (with its finality tag's block) tells
        which ranges are far below it (:func:`~scanner.core.finality.deep_end`)."""
        self._head = await self.reader.head()
        validate_range(from_block, to_block, self._head)
        self._from = from_block
        if self.settings.finality is not None:
            self._tag = await self.reader.tag_block(self.settings.finality)

    @asynccontextmanager
    async def _dry_run(self) -> AsyncIterator[None]:
        """A dry run applies every range in ONE transaction that it rolls back at the end, so
        each range sees what the ranges before it would have written (its report is what a
        real run would do) and nothing is ever committed. It writes into temporary copies of
        the chain's rows (:mod:`scanner.db.scratch`): the real tables are only read, so it
        takes no chain lock, no row lock and no events lock, nor SQLite's write lock."""
        if not self.dry_run:
            yield
            return
        async with self.sessions() as session:
            self._dry_session = session
            try:
                await scratch.begin(session, self.settings.name)
                yield
            finally:
                self._dry_session = None
                # ended by closing its connection (the server rolls it back), never pooled
                # again: nothing it prepared against the copies is reused
                await session.invalidate()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        """A committed transaction; in a dry run, the run's one transaction (never committed)."""
        if self._dry_session is not None:
            yield self._dry_session
            return
        async with self.sessions() as session, session.begin():
            yield session

    async def _context(self) -> ChainContext:
        async with self._transaction() as session:
            tokens = await sync_tokens(session, self.settings)
        return ChainContext.from_settings(self.settings, tokens)

    async def _begin(self, from_block: int, to_block: int) -> tuple[ChainContext, int]:
        """The chain's context (its tokens synced) and the block the job resumes at, in one
        transaction."""
        name = self.settings.name
        async with self._transaction() as session:
            tokens = await sync_tokens(session, self.settings)
            if self.dry_run:
                resume = await jobs.peek(session, name, from_block, to_block)
            else:
                resume = await jobs.start(session, name, from_block, to_block)
        return ChainContext.from_settings(self.settings, tokens), resume

    async def _scan(
        self,
        ctx: ChainContext,
        start: int,
        end: int,
        summary: BackfillSummary,
        progress: Progress | None,
    ) -> None:
        self._first = start
        deep_to = ctx.deep_end(self._head, self._tag)
        async with self._walking():
            fetch, span = await self._fetcher(ctx, deep_to)
            cut = min(end, max(start - 1, deep_to))
            ranges = split_range(start, cut, span) + split_range(cut + 1, end, self.sizer.size)
            previous = await self._previous(start)
            window: dict[int, int] = {previous.number: previous.timestamp} if previous else {}
            most = max(span, FILTERED_SPAN * self.sizer.size)
            reads = prefetch_ready(
                ranges, fetch, self.settings.concurrency, linger=lambda data: linger(data, most)
            )
            async with aclosing(reads) as stream:
                async for data in _commits(stream, previous, most):
                    result = await self._commit(ctx, data, window, summary)
                    window = _tail(window | data.timestamps, ctx.reorg_depth + (ctx.required or 0))
                    summary.add(result)
                    if progress is not None:
                        progress(summary, data.end)

    @asynccontextmanager
    async def _walking(self) -> AsyncIterator[None]:
        """The scan of a chain; at its end, a walk of the book that no read waited for to its
        end is stopped (:meth:`_watched`)."""
        try:
            yield
        finally:
            for walk in self._walks:
                walk.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await walk
            self._walks.clear()

    async def _fetcher(
        self, ctx: ChainContext, deep_to: int
    ) -> tuple[Callable[[int, int], Awaitable[RangeData]], int]:
        """How each range is read, and how many blocks a range (one commit) spans.

        Ending at or below ``deep_to`` (:func:`~scanner.core.finality.deep_end` of the head as
        the run began) and with no native-coin payment to look for, a range is read without a
        header per block (:func:`~scanner.scan.fetch.fetch_deep`). While the chain's payments
        use at most ``filter_recipients_max`` addresses, eth_getLogs asks for Transfers to them
        alone, a range spanning :data:`FILTERED_SPAN` times ``batch_size`` blocks; more, and
        the tokens' logs are read whole, sifted by those addresses as they are parsed. The logs
        of a read so narrowed are decoded as soon as they are in, while the commit before them
        writes (:meth:`~scanner.scan.fetch.RangeData.decoded_ahead`). Payments
        written during the run at another address cannot be paid by these blocks, unless
        written behind them: the live scan's catch-up's (``seen_at_block`` NULL)."""
        (topics, sieve, native), tokens = await self._watched(ctx), ctx.token_addresses
        reader, sizer = self.reader, self.sizer

        async def fetch(a: int, b: int) -> RangeData:
            if b <= deep_to and watches_none(native):
                data = await fetch_deep(
                    reader,
                    tokens,
                    a,
                    b,
                    required=ctx.required,
                    sizer=sizer,
                    to_topics=topics,
                    watched=sieve,
                )
            else:
                data = await fetch_range(
                    reader,
                    tokens,
                    a,
                    b,
                    native_watched=native,
                    sizer=sizer,
                    to_topics=topics,
                    watched=sieve,
                )
            if topics is None and _none(sieve):  # every log kept: most pay nobody
                return data
            return data.decoded_ahead(ctx.tokens)  # while an earlier range is committed

        return fetch, self.sizer.size * (FILTERED_SPAN if topics is not None else 1)

    async def _watched(
        self, ctx: ChainContext
    ) -> tuple[list[str] | None, Sieve | None, NativeWatch]:
        """The recipient topics eth_getLogs asks for (None: every Transfer of the tokens), those
        whole answers are sifted by (None: every log kept, with more than :data:`SIEVE_MAX`),
        and the native-coin recipients looked for.

        The book is walked as far as ``filter_recipients_max`` first: beyond it, the rest of
        the walk (up to :data:`SIEVE_MAX`) goes on in a task of its own while the first reads
        go out, and their answers wait for it before they are sifted (a dry run, whose one
        session cannot be shared, walks it all first)."""
        limit = self.settings.filter_recipients_max
        async with self._transaction() as session:
            watched = await payments.watched_addresses(
                session, ctx.name, limit, as_written=ctx.kind.case_sensitive
            )
            sifting = watched is None and limit < SIEVE_MAX
            native: NativeWatch = ()
            sieve: Sieve | None = None
            if sifting and self.dry_run:
                sieve = await self._sieve(session, ctx)
            if self.dry_run and ctx.kind.native:  # its one session holds SQLite's connection
                native = await payments.native_addresses(session, ctx.name)
        if not self.dry_run:
            native = await native_watch(self.sessions, ctx.name, ctx.kind)
        if watched is not None:
            return [recipient_topic(a) for a in _keys(ctx, watched)], None, native
        if sifting and not self.dry_run:
            sieve = asyncio.ensure_future(self._walk(ctx))
            self._walks.append(sieve)
        return None, sieve, native

    async def _walk(self, ctx: ChainContext) -> frozenset[str] | None:
        async with self._transaction() as session:
            return await self._sieve(session, ctx)

    async def _sieve(self, session: AsyncSession, ctx: ChainContext) -> frozenset[str] | None:
        """The recipient topics of every address the chain's payments use; None for more than
        :data:`SIEVE_MAX` addresses."""
        watched = await payments.watched_addresses(
            session, ctx.name, SIEVE_MAX, as_written=ctx.kind.case_sensitive
        )
        return None if watched is None else watched_topics(_keys(ctx, watched))

    async def _commit(
        self, ctx: ChainContext, data: RangeData, window: dict[int, int], summary: BackfillSummary
    ) -> BatchReport:
        if self.before_commit is not None:
            await self.before_commit()
        started = time.perf_counter()
        async with self._transaction() as session:
            result = await self._apply(session, ctx, data, window, summary)
        self.metrics.backfilled(ctx.name, data.end - data.start + 1)
        report_batch(
            self.log, self.metrics, ctx.name, result, time.perf_counter() - started, ctx.kind
        )
        return result

    async def _apply(
        self,
        session: AsyncSession,
        ctx: ChainContext,
        data: RangeData,
        window: dict[int, int],
        summary: BackfillSummary,
    ) -> BatchReport:
        if not self.dry_run:
            idle = COMMAND_IDLE_SECONDS if self.idle_seconds is None else self.idle_seconds
            await chain_xact_lock(session, ctx.name, idle_seconds=idle)
        live = await cursor.get_cursor(session, ctx.name)
        floor = live.block if live is not None else -1
        await verify_stored(session, ctx, data)  # the blocks the live scan linked, if any
        # Inside the reorg window only what the live scan linked is final (its cursor), not
        # what this node says; without a live scan, the backfill's own linked reads. Reads
        # begun above the live cursor (or with none) are not linked to it: a credit below them
        # is final only on the live cursor's word, or where the node still shows its block
        # (load_range's linked_from).
        end_checked = live is None or data.end <= ctx.deep_end(self._head, self._tag)
        linked = floor >= self._first - 1
        tag_block = await self.reader.tag_block(ctx.tag) if ctx.tag else None
        # A dry run writes into its one transaction's temporary copies, without row locks.
        mode = DRY_RUN if self.dry_run else BACKFILL
        result = await run_range(
            session,
            ctx,
            data,
            mode,
            tag_block=tag_block,
            below=window,
            checked_floor=floor,
            end_checked=end_checked,
            linked_from=None if linked else self._first,
            node_hashes=self.reader.hashes_at,
            # blocks between the live cursor and this run are nobody's yet: no expiry
            decides_expiry=live is None or floor >= self._from - 1,
        )
        if not self.dry_run:
            await self._advance(session, ctx.name, summary, data)
        return result

    async def _advance(
        self, session: AsyncSession, chain: str, summary: BackfillSummary, data: RangeData
    ) -> None:
        """The job's progress, in the range's transaction; a split job's is fenced."""
        job = (summary.from_block, summary.to_block)
        if self.worker is None:
            await jobs.advance(session, chain, *job, data.end + 1)
        elif not await jobs.advance_fenced(
            session, chain, job, self.worker, data.start, data.end + 1
        ):
            raise BackfillJobLost(
                f"backfill job {job[0]}-{job[1]} of {chain!r} is not this worker's any more:"
                " nothing written",
                chain=chain,
                job=job,
            )

    async def _previous(self, start: int) -> Header | None:
        if start == 0:
            return None
        return (await self.reader.headers(start - 1, start - 1))[0]


def linger(data: RangeData, most: int) -> float:
    """How long a commit whose first read is ``data`` waits for the reads under way
    (:data:`LINGER`); 0 when a read like it could not be joined to it (:func:`_commits`: at most
    :data:`COMMIT_LOGS` logs and ``most`` blocks)."""
    joinable = 2 * len(data.logs) <= COMMIT_LOGS and 2 * (data.end - data.start + 1) <= most
    return LINGER if joinable else 0.0


def _none(sieve: Sieve | None) -> bool:
    """Whether ``sieve`` sifts nothing (a walk read more addresses than it takes)."""
    if isinstance(sieve, asyncio.Future):
        done = sieve.done() and not sieve.cancelled() and sieve.exception() is None
        return done and sieve.result() is None
    return sieve is None


def _keys(ctx: ChainContext, watched: set[str]) -> list[str]:
    """The addresses as matched (TRON: rows written T… or 41… too); an address that is no
    20-byte hex (a row the gateway wrote wrong) is paid by no log."""
    return [a for a in ctx.kind.match_keys(watched) if is_hex(a)]


def is_hex(address: str) -> bool:
    """Whether ``address`` is ``0x`` and 40 lower-case hex digits (a set's check, in C: a book of
    ten thousand addresses is checked in a few milliseconds)."""
    return len(address) == 42 and address.startswith("0x") and HEX.issuperset(address[2:])


HEX = frozenset("0123456789abcdef")


async def _commits(
    batches: AsyncIterator[list[RangeData]], previous: Header | None, most: int
) -> AsyncIterator[RangeData]:
    """The ranges read, each checked against the one before it, joined into commits of at most
    :data:`COMMIT_LOGS` logs and ``most`` blocks: a commit costs the same whatever it holds
    (locking, updating and totalling its payments), so reads with few logs need not be a
    commit each. Only reads already in are joined; the reads started with a commit's first
    read are waited for, for :data:`LINGER` of that read's time and no longer (reads started
    together come in together, and a node that stalls then costs no work already read)."""
    async for reads in batches:
        held: RangeData | None = None
        for data in reads:
            verify_links(data, (previous.number, previous.hash) if previous else None)
            previous = data.last
            if held is not None and (
                held.dense != data.dense
                or len(held.logs) + len(data.logs) > COMMIT_LOGS
                or data.end - held.start + 1 > most
            ):
                yield held
                held = None
            held = data if held is None else joined(held, data)
        if held is not None:
            yield held


def _tail(timestamps: dict[int, int], keep: int) -> dict[int, int]:
    if len(timestamps) <= keep:
        return timestamps
    cut = sorted(timestamps)[-keep:]
    return {n: timestamps[n] for n in cut}
