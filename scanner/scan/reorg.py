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
from scanner.errors import DeepReorg
from scanner.scan.batch import BatchReport, run_rewind
from scanner.scan.context import ChainContext


@dataclass(frozen=True, slots=True)
class ReorgOutcome:
    old_cursor: int
    ancestor: int
    depth: int
    orphaned: int
    report: BatchReport


async def find_ancestor(
    reader: ChainReader, ctx: ChainContext, stored: list[Header], cursor: int
) -> int:
    """The highest stored block the node still agrees with; DeepReorg when none is."""
    if not stored:
        raise DeepReorg(chain=ctx.name, depth=ctx.reorg_depth + 1, max_depth=ctx.reorg_depth)
    low = stored[0].number
    node_headers = await reader.headers(low, min(cursor, stored[-1].number))
    ancestor = find_common_ancestor(
        {h.number: h.hash for h in stored}, {h.number: h.hash for h in node_headers}
    )
    plan = walk_back_plan(cursor, ancestor, ctx.reorg_depth, oldest_stored=low)
    plan.raise_if_too_deep(ctx.name)
    return plan.new_cursor


async def rewind(
    session: AsyncSession,
    ctx: ChainContext,
    *,
    cursor: int,
    ancestor: int,
    tag_block: int | None,
) -> ReorgOutcome:
    """Undo every block above ``ancestor`` inside the caller's transaction."""
    report, orphaned = await run_rewind(
        session, ctx, cursor=cursor, ancestor=ancestor, tag_block=tag_block
    )
    return ReorgOutcome(
        old_cursor=cursor,
        ancestor=ancestor,
        depth=cursor - ancestor,
        orphaned=orphaned,
        report=report,
    )
