"""The sweep: each final range of the live scan read once more, for logs a node left out.

Providers answer ``eth_getLogs`` with fewer logs than exist (a replica behind a load balancer,
a node still indexing), and a log left out breaks no hash link. Once blocks are final, their
Transfer logs are read again, from a ``verify_urls`` provider when one is set (else the
primary), and compared with what is stored:

    swept block (chain_states) ─▶ the final blocks above it, once ``sweep_blocks`` of them wait
    ─▶ their Transfer logs to watched addresses, read again (one read per span: sub-ranges and
       sizes as the live scan's, recipients filtered while few are watched)
    ─▶ compared by (tx_hash, log_index) with the stored credits that are not orphaned
    ─▶ none missing: the swept block moves (one short transaction)
       some missing: the headers of their blocks, then load → plan → persist (``SWEEP``) and
       the swept block, in ONE transaction under the chain's lock and fence: each transfer is
       credited in its real block, final already (a payment may go straight to ``confirmed``);
       ``logs_missed`` per transfer, ``scanner_logs_missed_total``, ``scanner status``

Final means what it means for payments: ``confirmations`` deep below the cursor, or under the
finality tag. A read that fails is put off (``sweep_delayed``) and tried again next tick; the
live scan goes on. The swept block moves only with the work it covers, and never above the
cursor (a walk-back lowers it: those blocks are swept again once final).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scanner.chain.reader import ChainReader
from scanner.chain.rpc import RpcClient
from scanner.config import ChainSettings
from scanner.core.decode import hex_hash, hex_quantity, recipients_of
from scanner.core.events import TRANSFER_DETECTED
from scanner.core.model import Event, Header, Log
from scanner.core.plan import SWEEP
from scanner.core.ranges import RangeSizer
from scanner.core.reorg import logs_agree
from scanner.db import cursor, payments
from scanner.db import sweep as stored
from scanner.errors import (
    BlockNotAvailable,
    MalformedResponse,
    PaymentLocked,
    RangeInconsistent,
    RangeRejected,
    RpcError,
)
from scanner.observe.metrics import Metrics, NullMetrics
from scanner.scan.backfill import is_hex
from scanner.scan.batch import BatchReport, run_range, run_tick
from scanner.scan.context import ChainContext, lock_chain
from scanner.scan.fetch import RangeData, fetch_logs, log_blocks, recipient_topic
from scanner.scan.report import report_batch


@dataclass(frozen=True, slots=True)
class Swept:
    """One span swept: its blocks and the transfers credited only now."""

    start: int
    end: int
    missed: tuple[Event, ...] = ()


class Sweep:
    """Sweeps one chain's final ranges; :meth:`run` once per tick, after the live scan's."""

    def __init__(
        self,
        chain: ChainSettings,
        reader: ChainReader,
        sessions: async_sessionmaker[AsyncSession],
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.name = chain.name
        self.sessions = sessions
        self.metrics = metrics or NullMetrics()
        self.every = chain.sweep_blocks
        # at most what one tick of the live scan reads (so it keeps up), at least sweep_blocks
        self.span = max(chain.batch_size * chain.concurrency, chain.sweep_blocks)
        self.limit = chain.filter_recipients_max
        self.sizer = RangeSizer(chain.batch_size)
        self.log = structlog.get_logger(__name__).bind(chain=chain.name)
        # The swept block as last read or written (None: read it). The stored one is never
        # higher; a walk-back may lower it, so it is read again after one.
        self._swept: int | None = None
        self._checked = -1
        self._own: RpcClient | None = None
        self.reader = reader
        if chain.verify_urls:
            self._own = RpcClient(
                chain.name,
                [u.get_secret_value() for u in chain.verify_urls],
                timeout=chain.rpc_timeout,
                max_attempts=chain.rpc_max_attempts,
                observer=metrics,
                max_rps=chain.rpc_max_rps,
                headers=chain.headers(),
            )
            self.reader = ChainReader(self._own)

    async def aclose(self) -> None:
        if self._own is not None:
            await self._own.aclose()

    async def run(self, ctx: ChainContext, checked: int, tag: Header | None) -> Swept | None:
        """Sweep the next span when enough blocks are final with the cursor at ``checked``
        (None: nothing was swept). What fails on the way is put off to the next tick, never in
        the live scan's way."""
        try:
            return await self._run(ctx, checked, tag)
        except (RpcError, RangeRejected, PaymentLocked) as exc:
            self._swept = None  # read again
            self.log.warning("sweep_delayed", reason=str(exc), error=type(exc).__name__)
            return None

    async def _run(self, ctx: ChainContext, checked: int, tag: Header | None) -> Swept | None:
        if checked < self._checked:
            self._swept = None  # a walk-back: the stored swept block may have gone down with it
        self._checked = checked
        span = await self._next_span(ctx, _final(ctx, checked, tag))
        if span is None:
            return None
        start, end = span
        logs = await self._read(ctx, start, end)
        missing = await self._missing(ctx, logs, start, end)
        data = await self._blocks(ctx, missing, start, end) if missing else None
        known = {end + 1: await self._time_after(end)}  # what the expiries are judged by
        if tag is not None:
            known[tag.number] = tag.timestamp
        return await self._commit(ctx, tag, (start, end), data, known)

    async def _time_after(self, end: int) -> int:
        """The time of the block after a span (stored, else the node's): once it is swept, a
        payment that expired before that time has had every block in its time read twice."""
        async with self.sessions() as session:
            kept = await cursor.stored_timestamps(session, self.name, end + 1, end + 1)
        if end + 1 in kept:
            return kept[end + 1]
        (header,) = await self.reader.headers_at([end + 1])
        return header.timestamp

    async def _next_span(self, ctx: ChainContext, final: int) -> tuple[int, int] | None:
        """The blocks to sweep now: from the swept block up to the ``final`` block, at most
        ``span`` of them, once at least ``sweep_blocks`` wait (a tick with fewer asks nothing
        of the database). A chain whose sweep has not begun (a database from before the sweep)
        begins at its final block."""
        if self._swept is not None and final - self._swept < self.every:
            return None
        async with self.sessions() as session:
            swept = self._swept = await stored.swept(session, self.name)
        if swept is None:
            async with self.sessions() as session, session.begin():
                await lock_chain(session, ctx)
                if await stored.swept(session, self.name) is None:
                    await stored.advance(session, self.name, final)
            self.log.info("sweep_begun", swept_block=final)
            self._swept = None
            return None
        if final - swept < self.every:
            return None
        return swept + 1, min(final, swept + self.span)

    async def _read(self, ctx: ChainContext, start: int, end: int) -> list[Log]:
        """The span's Transfer logs: to the watched addresses alone while there are at most
        ``filter_recipients_max`` of them, else the tokens' logs whole. Only from a provider
        whose head covers the span: one behind it answers ``[]`` for blocks it does not have."""
        head = await self.reader.head()
        if head < end:
            raise BlockNotAvailable(
                f"the sweep's provider is at block {head}, below {end}", block=end
            )
        async with self.sessions() as session:
            watched = await payments.watched_addresses(
                session, self.name, self.limit, as_written=ctx.kind.case_sensitive
            )
        if watched is not None:  # as matched (TRON: rows written T… or 41… too)
            watched = ctx.kind.match_keys(watched)
        topics = None if watched is None else [recipient_topic(a) for a in watched if is_hex(a)]
        tokens = ctx.token_addresses
        return await fetch_logs(self.reader, tokens, start, end, self.sizer, to_topics=topics)

    async def _missing(
        self, ctx: ChainContext, logs: Sequence[Log], start: int, end: int
    ) -> list[Log]:
        """The logs to a watched address whose transfer has no credit stored, in whatever block
        (or only an orphaned one: re-mined in a block the first read left out)."""
        logs = _valid(logs, start, end)
        if not logs:
            return []
        async with self.sessions() as session:
            forms = ctx.kind.lookup_forms(recipients_of(logs))  # every spelling a row may hold
            watched = ctx.kind.match_keys(await stored.watched_among(session, self.name, forms))
            ours = [e for e in logs if _recipient(e) in watched]
            have = await stored.stored_keys(session, self.name, {_key(e)[0] for e in ours})
        return [e for e in ours if _key(e) not in have]

    async def _blocks(
        self, ctx: ChainContext, logs: Sequence[Log], start: int, end: int
    ) -> RangeData:
        """The missing logs as a range to plan: the times of their blocks and of the blocks
        whose finality each one's plan reads, from the stored blocks where the live scan keeps
        them (their hashes must agree), else from the sweep's provider."""
        hashes, times = log_blocks(logs)
        back = ctx.required if ctx.required is not None else 1
        wanted = {n for b in hashes for n in (b, b - back) if n >= 0}
        async with self.sessions() as session:
            kept = await cursor.stored_headers(session, self.name, min(wanted), max(wanted))
        headers = {h.number: h for h in kept if h.number in wanted}
        read = await self.reader.headers_at(sorted(wanted - headers.keys() - times.keys()))
        headers.update((h.number, h) for h in read)
        ordered = tuple(sorted(headers.values(), key=lambda h: h.number))
        if not logs_agree(logs, ordered, complete=False):
            raise RangeInconsistent(
                "the sweep's provider names a final block by another hash than the scan did"
            )
        times.update((h.number, h.timestamp) for h in ordered)
        return RangeData(start, end, ordered, tuple(logs), times=times, log_hashes=hashes)

    async def _commit(
        self,
        ctx: ChainContext,
        tag: Header | None,
        span: tuple[int, int],
        data: RangeData | None,
        known: dict[int, int],
    ) -> Swept | None:
        """Credit what was missing, move the swept block and judge the expiries that waited
        for it, in one transaction under the chain's lock and fence (``known``: block times
        the plan may need beyond the stored ones); None when the chain moved meanwhile (a
        walk-back, another writer): the span is read again next tick."""
        start, end = span
        started = time.perf_counter()
        async with self.sessions() as session, session.begin():
            await lock_chain(session, ctx)
            at = await cursor.get_cursor(session, self.name)
            swept = await stored.swept(session, self.name)
            if at is None or swept != start - 1 or _final(ctx, at.block, tag) < end:
                self.log.info("sweep_deferred", from_block=start, to_block=end)
                self._swept = None
                return None
            tag_block = tag.number if tag is not None else None
            result = await self._credit(session, ctx, data, (at.block, tag_block), known)
            missed = _detected(result)
            await stored.advance(session, self.name, end, len(missed))
            if data is None:  # (a credit's plan judged them already)
                result = await self._expire(session, ctx, (at.block, tag_block), known)
            if ctx.fence is not None:  # again, last: a holder frozen meanwhile writes nothing
                await ctx.fence(session)
        self._swept = end
        self._report(ctx, result, missed, (start, end), time.perf_counter() - started)
        return Swept(start, end, missed)

    async def _credit(
        self,
        session: AsyncSession,
        ctx: ChainContext,
        data: RangeData | None,
        at: tuple[int, int | None],
        known: dict[int, int],
    ) -> BatchReport | None:
        if data is None:
            return None
        checked, tag_block = at
        return await run_range(
            session, ctx, data, SWEEP, tag_block=tag_block, below=known, checked_floor=checked
        )

    async def _expire(
        self,
        session: AsyncSession,
        ctx: ChainContext,
        at: tuple[int, int | None],
        known: dict[int, int],
    ) -> BatchReport:
        """The expiries that waited for the blocks just swept, judged as the swept block moves
        (an expiry never waits for the next tick of the live scan)."""
        checked, tag_block = at
        low = checked - ctx.reorg_depth
        timestamps = await cursor.stored_timestamps(session, self.name, low, checked)
        return await run_tick(
            session, ctx, checked=checked, tag_block=tag_block, timestamps=timestamps | known
        )

    def _report(
        self,
        ctx: ChainContext,
        result: BatchReport | None,
        missed: Sequence[Event],
        span: tuple[int, int],
        seconds: float,
    ) -> None:
        start, end = span
        provider = self.reader.client.active_url  # redacted
        self.log.info("range_swept", from_block=start, to_block=end, missed=len(missed))
        for event in missed:
            data = event.data
            self.log.warning(
                "logs_missed",
                payment_id=str(event.payment_id),
                tx_hash=data.get("tx_hash"),
                log_index=data.get("log_index"),
                block_number=data.get("block_number"),
                provider=provider,
                from_block=start,
                to_block=end,
            )
        if missed:
            self.metrics.logs_missed.labels(self.name).inc(len(missed))
        if result is not None:
            # The events are told as any batch's; the span is no scanned range (no
            # range_scanned, no batch metrics), and the logs skipped and transfers nobody can
            # take are the live scan's to tell: it read them first.
            told = replace(result, end=result.start - 1, unmatched=(), skipped={})
            report_batch(self.log, self.metrics, self.name, told, seconds, ctx.kind)


def _final(ctx: ChainContext, checked: int, tag: Header | None) -> int:
    """The newest final block when the cursor is at ``checked``."""
    return ctx.rules.finality(checked, tag.number if tag is not None else None, {}).final_block


def _detected(result: BatchReport | None) -> tuple[Event, ...]:
    if result is None:
        return ()
    return tuple(e for e in result.events if e.type == TRANSFER_DETECTED)


def _valid(logs: Sequence[Log], start: int, end: int) -> list[Log]:
    """The logs that are not ``removed`` (their shape is checked at the edge); one of a block
    outside ``start..end``, what was asked for, is the node's fault."""
    for entry in logs:
        number = hex_quantity(entry.get("blockNumber"), "log blockNumber")
        if not start <= number <= end:
            raise MalformedResponse(f"a log of block {number}, outside {start}..{end}")
    return [e for e in logs if e.get("removed") is not True]


def _recipient(entry: Log) -> str | None:
    topics = entry.get("topics")
    if type(topics) is list and len(topics) == 3 and type(topics[2]) is str:
        return "0x" + topics[2][26:].lower()
    return None


def _key(entry: Log) -> tuple[str, int]:
    return (
        hex_hash(entry.get("transactionHash"), "log transactionHash"),
        hex_quantity(entry.get("logIndex"), "log logIndex"),
    )
