"""One range end to end, inside the caller's ONE database transaction: load → plan → persist.

    verify links ─▶ load (scan/load.py: rows, one query per kind) ─▶ plan (core/plan.py: pure)
                 ─▶ persist (db/persist.py: bulk writes, and the cursor when the mode moves it)

Live ranges, backfill ranges, the catch-up's look-back, the idle tick and the reorg walk-back all
run these same three steps; the :class:`~scanner.core.plan.Mode` says how. The caller opens the
transaction; nothing here commits, so a crash anywhere leaves the database as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Unpack

from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.model import Event, Transfer
from scanner.core.plan import Mode, RangeInput, RangePlan, status_changes
from scanner.core.reorg import check_link, check_sparse_link, disagrees_with_stored, logs_agree
from scanner.db import cursor
from scanner.db.persist import plan_and_write as plan_and_write_range
from scanner.errors import RangeInconsistent, ReorgDetected, StoredBlocksDisagree
from scanner.scan.context import ChainContext
from scanner.scan.fetch import RangeData
from scanner.scan.load import RangeTerms, load_edits, load_range, load_tick


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What a batch did, for logs, metrics and summaries."""

    start: int
    end: int
    logs: int = 0
    matched: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)
    events: tuple[Event, ...] = ()
    checked: int = -1
    unmatched: tuple[Transfer, ...] = ()
    look_back: tuple[object, ...] = ()  # ids as stored left alone (a credit row unreadable)

    @classmethod
    def of(
        cls, plan: RangePlan, logs: int = 0, skipped: Mapping[str, int] | None = None
    ) -> BatchReport:
        return cls(
            plan.start,
            plan.end,
            logs,
            plan.matched,
            dict(skipped or {}),
            plan.events,
            plan.finality.checked,
            plan.unmatched,
            plan.look_back,
        )

    @property
    def status_changes(self) -> list[tuple[str, str]]:
        return status_changes(self.events)

    @property
    def finality_violations(self) -> int:
        return sum(1 for e in self.events if e.type == "confirmed_reverted")


def verify_links(data: RangeData, parent: tuple[int, str] | None) -> None:
    """Raise ReorgDetected / RangeInconsistent when the range does not fit what we stored.

    A range far below the head (not ``dense``: no header per block) links by its first block's
    header, and its logs are checked against the headers it has: after an outage the first range
    is read so, and a reorg of the stored blocks meanwhile is found here, as for any range."""
    if data.dense:
        broken = check_link(data.headers, parent)
    else:
        broken = check_sparse_link(data.headers, data.start, parent)
    if broken is not None:
        raise ReorgDetected(broken)
    if not logs_agree(data.logs, data.headers, complete=data.dense, passed=data.passed.blocks):
        raise RangeInconsistent("logs and headers name different block hashes; reading again")


async def verify_stored(session: AsyncSession, ctx: ChainContext, data: RangeData) -> None:
    """Raise StoredBlocksDisagree when a range read beside the live scan (a backfill) does not
    agree with the blocks the live scan stored from just below it to its end."""
    stored = await cursor.stored_headers(session, ctx.name, data.start - 1, data.end)
    block = disagrees_with_stored(stored, data.headers, data.hashes, data.start)
    if block is not None:
        raise StoredBlocksDisagree(ctx.name, block)


async def plan_and_write(
    session: AsyncSession,
    ctx: ChainContext,
    inp: RangeInput,
    *,
    logs: int = 0,
    skipped: Mapping[str, int] | None = None,
) -> BatchReport:
    """Plan (pure) and persist what was loaded, in the caller's transaction: every path's
    last two steps; the report of what it did."""
    plan = await plan_and_write_range(session, ctx.name, inp)
    return BatchReport.of(plan, logs=logs, skipped=skipped)


async def run_range(
    session: AsyncSession,
    ctx: ChainContext,
    data: RangeData,
    mode: Mode,
    *,
    decides_expiry: bool = True,
    **terms: Unpack[RangeTerms],
) -> BatchReport:
    """Load (:func:`~scanner.scan.load.load_range`, under ``terms``), plan and write one range
    read from the node (``decides_expiry``: see :class:`~scanner.core.plan.RangeInput`)."""
    inp, skipped = await load_range(session, ctx, data, mode, **terms)
    inp = replace(inp, decides_expiry=decides_expiry)
    return await plan_and_write(session, ctx, inp, logs=data.read, skipped=skipped)


async def run_tick(
    session: AsyncSession,
    ctx: ChainContext,
    *,
    checked: int,
    tag_block: int | None,
    timestamps: Mapping[int, int],
) -> BatchReport:
    """A tick with no new block: confirmations and expiry still move (the tag may have)."""
    inp = await load_tick(session, ctx, checked=checked, tag_block=tag_block, timestamps=timestamps)
    return await plan_and_write(session, ctx, inp)


async def run_edits(
    session: AsyncSession,
    ctx: ChainContext,
    *,
    checked: int,
    tag_block: int | None,
    timestamps: Mapping[int, int],
) -> BatchReport | None:
    """Follow the gateway's edits of payment rows (a page of them); None when there was none."""
    inp = await load_edits(
        session, ctx, checked=checked, tag_block=tag_block, timestamps=timestamps
    )
    if inp is None:
        return None
    return await plan_and_write(session, ctx, inp)
