"""The persist step: a :class:`~scanner.core.plan.RangePlan` written in bulk, in the caller's
transaction (which never commits here): credits, payment outcomes, events, confirmations, and
for the live scan and the walk-back the block hashes and the cursor.

A range of many transfers is planned and written at once (:func:`plan_and_write`): its events
are handed to the database step by step as the plan makes them
(:func:`~scanner.core.plan.plan_steps`), so that the database stores them while the rest of the
range is planned, instead of after (PostgreSQL's server, SQLite's thread)."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.plan import (
    STEP_TRANSFERS,
    CursorMove,
    OutboxRow,
    RangeInput,
    RangePlan,
    plan_range,
    plan_steps,
)
from scanner.db import cursor, events, payments, sums, transactions

#: The fewest transfers a range has for its events to be stored while it is planned: below
#: two steps there is nothing to store before the plan is done.
STREAMED_TRANSFERS = 2 * STEP_TRANSFERS


async def plan_and_write(session: AsyncSession, chain: str, inp: RangeInput) -> RangePlan:
    """Plan the range (pure) and write the plan; the plan. With at least
    :data:`STREAMED_TRANSFERS` transfers and outside a dry run, the events go to the database
    as each step of the plan makes them (on PostgreSQL the events' lock taken first, and held
    while the range is planned); the rest is written once it is done. What is written is the
    same either way."""
    if inp.mode.scratch or len(inp.transfers) < STREAMED_TRANSFERS:
        plan = plan_range(inp)
        await write_plan(session, chain, plan)
        return plan
    steps = plan_steps(inp, max(1, STREAMED_TRANSFERS // 2))
    done: list[RangePlan] = []

    def outbox() -> Iterator[OutboxRow]:
        while True:
            try:
                yield from next(steps)
            except StopIteration as end:
                done.append(end.value)
                return

    owners = [h.row_key for h in inp.holdings] + [key for key, _ in inp.invalid]
    await events.append_made(session, owners, outbox())
    plan = done[0]
    await write_plan(session, chain, plan, events_written=True)
    return plan


async def write_plan(
    session: AsyncSession, chain: str, plan: RangePlan, *, events_written: bool = False
) -> None:
    """Write ``plan`` (its events too, unless ``events_written``)."""
    await transactions.write(session, chain, plan.credits)
    if plan.orphaned_unloaded:
        await transactions.orphan_unloaded(session, chain, plan.orphaned_unloaded)
    await payments.update(session, plan.payments)
    await sums.write(session, plan.payments)
    if not events_written:
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
