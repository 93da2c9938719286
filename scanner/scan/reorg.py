"""Walking back after a reorg: find the common ancestor, orphan what was above it, rewind.

The stored ``blocks`` (at least ``max_reorg_depth`` below the cursor) are compared with what the
node now says at the same heights. Everything above the highest block both agree on is undone in
one transaction: its transactions are orphaned (one event each, payments recomputed), its block
hashes deleted and the cursor set to the ancestor. The next tick scans those heights again, and a
transaction re-mined in a new block is credited again, once.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from scanner.chain.reader import ChainReader
from scanner.core.model import Header
from scanner.core.reorg import find_common_ancestor, walk_back_plan
from scanner.db import cursor as stored
from scanner.db import transactions
from scanner.errors import DeepReorg
from scanner.scan.batch import BatchReport, plan_and_write
from scanner.scan.context import ChainContext
from scanner.scan.load import load_rewind


@dataclass(frozen=True, slots=True)
class ReorgOutcome:
    old_cursor: int
    ancestor: int
    depth: int
    orphaned: int
    report: BatchReport


@dataclass(frozen=True, slots=True)
class StoredWindow:
    """What the walk-back compares with the node: the stored blocks of the reorg window below
    the cursor, and whether a credit is stored below the oldest of them in that window."""

    cursor: int
    headers: list[Header]
    credited_below: bool


async def stored_window(session: AsyncSession, ctx: ChainContext, cursor: int) -> StoredWindow:
    low = cursor - ctx.reorg_depth
    headers = await stored.stored_headers(session, ctx.name, low, cursor)
    oldest = headers[0].number if headers else cursor + 1
    credited = await transactions.any_credited(session, ctx.name, low + 1, oldest - 1)
    return StoredWindow(cursor, headers, credited)


async def find_ancestor(reader: ChainReader, ctx: ChainContext, window: StoredWindow) -> int:
    """The highest stored block the node still agrees with; DeepReorg when none is."""
    headers, cursor = window.headers, window.cursor
    if not headers:
        raise DeepReorg(chain=ctx.name, depth=ctx.reorg_depth + 1, max_depth=ctx.reorg_depth)
    low = headers[0].number
    node_headers = await reader.headers(low, min(cursor, headers[-1].number))
    ancestor = find_common_ancestor(
        {h.number: h.hash for h in headers}, {h.number: h.hash for h in node_headers}
    )
    plan = walk_back_plan(
        cursor, ancestor, ctx.reorg_depth, oldest_stored=low, credited_below=window.credited_below
    )
    plan.raise_if_too_deep(ctx.name)
    return plan.new_cursor


async def rewind(
    session: AsyncSession,
    ctx: ChainContext,
    *,
    cursor: int,
    ancestor: int,
    tag_block: int | None,
    whole: bool = False,
) -> ReorgOutcome:
    """Undo the blocks above ``ancestor`` up to ``cursor`` (``whole``: every block above it,
    a backfill's above the cursor too) inside the caller's transaction."""
    inp = await load_rewind(
        session, ctx, old_cursor=cursor, ancestor=ancestor, tag_block=tag_block, whole=whole
    )
    report = await plan_and_write(session, ctx, inp)
    return ReorgOutcome(
        old_cursor=cursor,
        ancestor=ancestor,
        depth=cursor - ancestor,
        orphaned=len(inp.orphan),
        report=report,
    )
