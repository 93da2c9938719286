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
from scanner.core.model import Event, Header
from scanner.core.reorg import find_common_ancestor, walk_back_plan
from scanner.db import queries as q
from scanner.errors import DeepReorg
from scanner.scan.context import ChainContext
from scanner.scan.payments import load_into_ledger


@dataclass(frozen=True, slots=True)
class ReorgOutcome:
    old_cursor: int
    ancestor: int
    depth: int
    orphaned: int
    events: tuple[Event, ...]


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
    dropped = await q.orphan_candidates_above(session, ctx.name, ancestor)
    timestamps = await q.stored_timestamps(session, ctx.name, ancestor - ctx.reorg_depth, ancestor)
    ancestor_hash = next(
        (h.hash for h in await q.stored_headers(session, ctx.name, ancestor, ancestor)), None
    )
    finality = ctx.finality(ancestor, tag_block, timestamps)
    loaded = await load_into_ledger(
        session, ctx, ids={d.payment_id for d in dropped}, finality=finality
    )
    loaded.ledger.orphan([(d.tx_hash, d.log_index) for d in dropped])
    loaded.ledger.advance(finality)
    events = loaded.ledger.events()
    await q.save_credits(session, ctx, loaded.ledger.credits(), {}, loaded.token_of, finality)
    await q.update_payments(session, ctx, loaded.ledger.changed(), loaded.token_of)
    await q.insert_events(session, ctx, events, loaded.token_of)
    await q.delete_blocks_above(session, ctx.name, ancestor)
    await q.set_cursor(session, ctx.name, ancestor, ancestor_hash)
    await q.record_reorg(session, ctx.name, cursor - ancestor)
    return ReorgOutcome(
        old_cursor=cursor,
        ancestor=ancestor,
        depth=cursor - ancestor,
        orphaned=len(dropped),
        events=tuple(events),
    )
