"""The persist step: a :class:`~scanner.core.plan.RangePlan` written in bulk, in the caller's
transaction (which never commits here): credits, payment outcomes, events, confirmations, and
for the live scan and the walk-back the block hashes and the cursor."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.plan import CursorMove, RangePlan
from scanner.db import cursor, events, payments, sums, transactions


async def write_plan(session: AsyncSession, chain: str, plan: RangePlan) -> None:
    await transactions.write(session, chain, plan.credits)
    if plan.orphaned_unloaded:
        await transactions.orphan_unloaded(session, chain, plan.orphaned_unloaded)
    await payments.update(session, plan.payments)
    await sums.write(session, plan.payments)
    await events.append(session, plan.outbox, serialized=not plan.mode.scratch)
    if plan.mode.recounts:
        await transactions.count_confirmations(session, chain, plan.finality)
    if plan.edited:
        await payments.clear_edited(session, plan.edited)
    if plan.look_back:  # what this range could not credit to them is looked back for
        await payments.mark_seen(session, plan.look_back, None)
    if plan.cursor is not None:
        await _move_cursor(session, chain, plan.cursor)


async def _move_cursor(session: AsyncSession, chain: str, move: CursorMove) -> None:
    if move.reorg_depth is not None:
        await cursor.delete_blocks_above(session, chain, move.number)
        await cursor.record_reorg(session, chain, move.reorg_depth)
    await cursor.store_blocks(session, chain, move.store)
    if move.keep_from is not None:
        await cursor.prune_blocks(session, chain, move.keep_from)
    await cursor.set_cursor(session, chain, move.number, move.hash)
