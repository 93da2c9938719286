"""The load step: every row a range needs, in a constant number of queries, as one frozen value.

Three kinds of payment matter to a range: those at the addresses its transfers pay (candidates),
those holding credits in blocks the node no longer shows (to orphan), and the open ones whose
confirmations or expiry move with the checked block. Each kind is one query, whatever the number
of payments; their credits are one more. The caller holds the transaction; nothing is written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Required, TypedDict
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.amounts import to_base_units
from scanner.core.decode import decode_transfer_logs, recipients_of, watched_topics
from scanner.core.model import Credit, Finality, Transfer
from scanner.core.plan import EDIT, LIVE, REWIND, SWEEP, Mode, RangeInput, Rewind
from scanner.core.reorg import not_shown, replaced_credits
from scanner.core.states import NOTHING, Settled
from scanner.db import cursor, payments, sums, transactions
from scanner.db import sweep as sweep_state
from scanner.db.payments import RawPayment
from scanner.db.sql import moment
from scanner.db.types import to_decimal
from scanner.scan.context import ChainContext
from scanner.scan.fetch import RangeData
from scanner.scan.rows import holdings, read_rows

log = structlog.get_logger(__name__)
Rows = dict[Any, RawPayment]  # by id as stored
#: the hashes the node shows now for these blocks
NodeHashes = Callable[[Collection[int]], Awaitable[Mapping[int, str]]]
EDITS_PER_TICK = 500


async def _replaced(
    session: AsyncSession, ctx: ChainContext, data: RangeData, node_hashes: NodeHashes | None
) -> list[transactions.StoredTx]:
    """The credits stored in the range's blocks that the node's blocks replaced. A range read
    without a header per block knows the hashes of some of its blocks only: a credit not final
    yet in another one was read when its block was near the head (a backfill's, before a
    reorg), so its block's hash is asked for (``node_hashes``)."""
    stored = await transactions.in_blocks(session, ctx.name, data.start, data.end)
    hashes = data.hashes
    if not data.dense and node_hashes is not None:
        unknown = {s.block_number for s in stored if not s.final} - hashes.keys()
        if unknown:
            hashes = {**hashes, **await node_hashes(unknown)}
    return replaced_credits(stored, hashes, complete=data.dense)


class RangeTerms(TypedDict, total=False):
    """What :func:`load_range` judges a range's finality by, as its callers pass it on."""

    tag_block: Required[int | None]
    below: Required[Mapping[int, int]]
    checked_floor: int
    end_checked: bool
    linked_from: int | None
    node_hashes: NodeHashes | None


async def load_range(
    session: AsyncSession,
    ctx: ChainContext,
    data: RangeData,
    mode: Mode,
    *,
    tag_block: int | None,
    below: Mapping[int, int],
    checked_floor: int = -1,
    end_checked: bool = True,
    linked_from: int | None = None,
    node_hashes: NodeHashes | None = None,
) -> tuple[RangeInput, dict[str, int]]:
    """The range's input to the plan, and the decoder's skipped-log counts by reason.

    ``below`` maps block numbers just below the range to their timestamps (stored blocks, or the
    backfill's previous range), so finality can be judged at every block boundary. Finality
    counts against the range's end (unless ``end_checked`` is False: a backfill range inside the
    reorg window) or ``checked_floor`` (the live cursor), the higher.

    ``linked_from``: a backfill whose reads begin there, above the live cursor (or with no live
    scan), with blocks unread between. A credit it loads below that block and above what the
    live cursor has made final sits in a block that may have been replaced unseen: unless the
    node still shows every such block under the credit's hash (``node_hashes``), the range is
    loaded with the live cursor alone checked, and ``unlinked``
    (:class:`~scanner.core.plan.RangeInput`).

    ``node_hashes`` also judges the credits not final yet stored in a range read without a
    header per block (:func:`_replaced`).
    """
    checked = max(data.end if end_checked else -1, checked_floor)
    timestamps = await _timestamps(session, ctx, data, below, checked)
    finality = ctx.rules.finality(checked, tag_block, timestamps)
    replaced = await _replaced(session, ctx, data, node_hashes) if mode.orphans_replaced else []
    rows = await _candidates(session, ctx, data, mode.locks_rows)
    orphan_owners = {s.payment_key for s in replaced}
    await _add(session, rows, orphan_owners, mode.locks_rows)
    await _add_advancing(session, ctx, rows, finality, mode.locks_rows, live=not mode.reads_history)
    written = [row.address for row in rows.values() if isinstance(row.address, str)]
    watched = ctx.kind.match_keys(written)
    ahead = data.decoded()
    if ahead is not None:
        decoded = ahead.watching(watched_topics(watched))
    else:
        decoded = decode_transfer_logs(data.logs, ctx.tokens, data.timestamps, recipients=watched)
    transfers = sorted(
        [*decoded.transfers, *data.native], key=lambda t: (t.block_number, t.log_index)
    )
    inp = await _input(
        session, ctx, rows, mode, checked, tag_block, timestamps, transfers, orphan_owners
    )
    orphan = tuple(s.key for s in replaced)
    inp = replace(inp, start=data.start, end=data.end, headers=data.headers, orphan=orphan)
    if mode is SWEEP and inp.unswept is not None:  # the sweep's own span is read again now
        inp = replace(inp, unswept=await _unswept(session, ctx, timestamps, data.end))
    unlinked = _unlinked_credits(inp, checked_floor, linked_from)
    if unlinked and not await _shown(node_hashes, unlinked):
        if checked != checked_floor:  # its own end counted as checked: load again without it
            inp, _ = await load_range(
                session, ctx, data, mode, tag_block=tag_block, below=below,
                checked_floor=checked_floor, end_checked=False,
            )  # fmt: skip
        inp = replace(inp, unlinked=True)
    return inp, _counted(decoded.skipped, data.passed.zero_value)


def _unlinked_credits(inp: RangeInput, floor: int, linked_from: int | None) -> set[tuple[int, str]]:
    """The blocks (number, hash) of the credits loaded in blocks below ``linked_from`` that the
    live cursor (``floor``) has not made final, neither final as stored nor orphaned."""
    if linked_from is None:
        return set()
    final = inp.rules.finality(floor, inp.tag_block, {}).final_block
    return {
        (c.block_number, c.block_hash)
        for credits in inp.credits.values()
        for c in credits
        if final < c.block_number < linked_from and not (c.final or c.orphaned)
    }


async def _shown(node_hashes: NodeHashes | None, blocks: Collection[tuple[int, str]]) -> bool:
    """Whether the node shows each of ``blocks`` (number, hash) under that hash now."""
    if node_hashes is None:
        return False
    return not not_shown(blocks, await node_hashes({n for n, _ in blocks}))


def _counted(skipped: Mapping[str, int], zero_value: int) -> dict[str, int]:
    """The decoder's skipped logs and the zero-value ones passed over unread, by reason."""
    out = dict(skipped)
    if zero_value:
        out["zero_value"] = out.get("zero_value", 0) + zero_value
    return out


async def _timestamps(
    session: AsyncSession,
    ctx: ChainContext,
    data: RangeData,
    below: Mapping[int, int],
    checked: int,
) -> dict[int, int]:
    """Block times from below the range through ``checked`` (stored ones above the range)."""
    timestamps = {**below, **data.timestamps}
    if not data.start <= checked <= data.end:
        low = checked - ctx.reorg_depth
        timestamps.update(await cursor.stored_timestamps(session, ctx.name, low, checked))
    return timestamps


async def load_tick(
    session: AsyncSession,
    ctx: ChainContext,
    *,
    checked: int,
    tag_block: int | None,
    timestamps: Mapping[int, int],
) -> RangeInput:
    """A tick with no new block: the open payments that the checked block alone moves."""
    rows: Rows = {}
    finality = ctx.rules.finality(checked, tag_block, timestamps)
    await _add_advancing(session, ctx, rows, finality, True)
    return await _input(session, ctx, rows, LIVE, checked, tag_block, timestamps, [])


async def load_edits(
    session: AsyncSession,
    ctx: ChainContext,
    *,
    checked: int,
    tag_block: int | None,
    timestamps: Mapping[int, int],
    limit: int = EDITS_PER_TICK,
) -> RangeInput | None:
    """The rows the gateway edited (a page of them), to recompute; None when there is none."""
    edited = await payments.edited(session, ctx.name, limit=limit)
    if not edited:
        return None
    rows: Rows = {row.key: row for row in edited}
    invalid = tuple(read_rows(edited, ctx)[1].items())
    inp = await _input(session, ctx, rows, EDIT, checked, tag_block, timestamps, [])
    revise = tuple(h.payment.id for h in inp.holdings)
    return replace(inp, revise=revise, invalid=invalid, edited=tuple(rows))


async def load_rewind(
    session: AsyncSession,
    ctx: ChainContext,
    *,
    old_cursor: int,
    ancestor: int,
    tag_block: int | None,
    whole: bool = False,
) -> RangeInput:
    """A walk-back to ``ancestor``: the credits in the blocks it undoes and the payments
    holding them. A reorg's walk-back undoes the blocks it stored, up to the cursor: a
    backfill's credits above it were read from the chain as it is, and are judged by hash when
    the live scan reads their blocks. ``whole`` (an operator's rewind): every block above."""
    top = 2**62 if whole else old_cursor
    dropped = await transactions.in_blocks(session, ctx.name, ancestor + 1, top)
    low = ancestor - ctx.reorg_depth
    timestamps = await cursor.stored_timestamps(session, ctx.name, low, ancestor)
    stored = await cursor.stored_headers(session, ctx.name, ancestor, ancestor)
    rows: Rows = {}
    await _add(session, rows, {d.payment_key for d in dropped}, True)
    finality = ctx.rules.finality(ancestor, tag_block, timestamps)
    await _add_advancing(session, ctx, rows, finality, True)
    inp = await _input(session, ctx, rows, REWIND, ancestor, tag_block, timestamps, [])
    rewind = Rewind(ancestor, stored[0].hash if stored else None, old_cursor - ancestor)
    orphan = tuple(d.key for d in dropped)
    return replace(inp, start=ancestor + 1, end=old_cursor, orphan=orphan, rewind=rewind)


async def _input(
    session: AsyncSession,
    ctx: ChainContext,
    rows: Rows,
    mode: Mode,
    checked: int,
    tag_block: int | None,
    timestamps: Mapping[int, int],
    transfers: list[Transfer],
    whole: Collection[Any] = (),
) -> RangeInput:
    """The plan's input over ``rows``, with the owners of the transfers' rows and their credits
    (every one for those owners and the rows of ``whole``; :func:`_credits`)."""
    hashes = {t.tx_hash for t in transfers}
    owners, stored = await transactions.owners_of(session, ctx.name, hashes)
    await _add(session, rows, owners, mode.locks_rows)
    held = holdings(rows.values(), ctx)
    tokens = {h.row_key: h.token_id for h in held}
    received = {h.row_key: (rows[h.row_key].amount_received, h.decimals) for h in held}
    whole = owners | set(whole)
    found, totals, broken = await _credits(session, tokens, received, mode.settles, whole)
    held = [h for h in held if h.row_key not in broken]  # left alone until the row is fixed
    return RangeInput(
        rules=ctx.rules,
        mode=mode,
        start=checked + 1,
        end=checked,
        checked=checked,
        tag_block=tag_block,
        timestamps=dict(timestamps),
        headers=(),
        transfers=tuple(transfers),
        holdings=tuple(held),
        credits={h.payment.id: tuple(found.get(h.row_key, ())) for h in held},
        look_back=tuple(broken),
        settled={h.payment.id: totals[h.row_key] for h in held if h.row_key in totals},
        stored_hashes=stored,
        unswept=await _unswept(session, ctx, timestamps, await _swept(session, ctx)),
    )


async def _swept(session: AsyncSession, ctx: ChainContext) -> int | None:
    return await sweep_state.swept(session, ctx.name) if ctx.sweeps else None


async def _unswept(
    session: AsyncSession, ctx: ChainContext, timestamps: Mapping[int, int], swept: int | None
) -> tuple[int, int | None] | None:
    """The first block the sweep has not read again and its time (a stored block's; None when
    not stored), or None: no sweep (off, or not begun) bounds the expiry."""
    if swept is None:
        return None
    first = swept + 1
    time = timestamps.get(first)
    if time is None:
        time = (await cursor.stored_timestamps(session, ctx.name, first, first)).get(first)
    return first, time


async def _credits(
    session: AsyncSession,
    tokens: Mapping[Any, UUID | None],
    received: Mapping[Any, tuple[Any, int]],
    settles: bool,
    whole: set[Any],
) -> tuple[dict[Any, list[Credit]], dict[Any, Settled], set[Any]]:
    """The credits to load, by payment (ids as stored): every credit of the payments in
    ``whole`` (a transfer or orphan of the range is theirs) and of those without usable stored
    totals; of the others (``settles``) only the not-yet-final ones, with what their final ones
    add up to. Also the payments with an unreadable credit row (left alone). Two statements,
    whatever the rows (a third when stored totals do not add up).

    Stored totals are used only when they are of the payment's token now (not one the gateway
    switched from) and equal the ``amount_received`` the scanner wrote beside them (``received``:
    as stored, with the token's decimals): a table edited by hand is never trusted."""
    stored = await sums.totals_of(session, tokens.keys()) if settles else {}
    usable = {k: v.total for k, v in stored.items() if k not in whole and v.of(tokens[k])}
    found, broken = await transactions.credits_of(session, tokens, partial=usable.keys())
    settled: dict[Any, Settled] = {}
    mismatch: dict[Any, UUID | None] = {}
    for key, total in usable.items():
        left = sums.settled_of(total, found.get(key, ()))
        if left is None or total.value != _base_units(*received[key]):
            mismatch[key] = tokens[key]
        elif left != NOTHING:
            settled[key] = left
    if mismatch:  # stored totals that do not add up are never trusted: read them in full
        log.warning("payment_sums_mismatch", payments=[str(k) for k in list(mismatch)[:20]])
        more, unreadable = await transactions.credits_of(session, mismatch)
        found.update(more)
        broken |= unreadable
    return found, settled, broken


def _base_units(amount: Any, decimals: int) -> int | None:
    """An amount as stored in base units; None when it is not a readable amount."""
    try:
        return to_base_units(to_decimal(amount), decimals)
    except (ValueError, TypeError, ArithmeticError):
        return None


async def _candidates(
    session: AsyncSession, ctx: ChainContext, data: RangeData, lock: bool
) -> Rows:
    """Payments at the range's recipients that a transfer of its block times can go to."""
    recipients = recipients_of(data.logs) | {t.to_address for t in data.native}
    if not recipients:
        return {}
    times = [t for n, t in data.timestamps.items() if data.start <= n <= data.end]
    window: tuple[datetime, datetime] | None = None
    if times:
        window = (moment(min(times) + ctx.grace), moment(max(times) + ctx.grace))
    forms = ctx.kind.lookup_forms(recipients)  # every spelling a row may hold (TRON: three)
    found = await payments.by_address(session, ctx.name, forms, lock=lock, window=window)
    return {row.key: row for row in found}


async def _add(session: AsyncSession, rows: Rows, keys: set[Any], lock: bool) -> None:
    missing = keys - rows.keys()
    if missing:
        rows.update((row.key, row) for row in await payments.by_key(session, missing, lock=lock))


async def _add_advancing(
    session: AsyncSession,
    ctx: ChainContext,
    rows: Rows,
    finality: Finality,
    lock: bool,
    *,
    live: bool = True,
) -> None:
    """The open payments whose confirmations or expiry the checked block moves (for the live
    scan, of the unseen ones only those its look-back has looked at)."""
    cutoff = None if finality.final_timestamp is None else moment(finality.final_timestamp)
    found = await payments.to_advance(session, ctx.name, cutoff, lock=lock, looked_at_only=live)
    for row in found:
        rows.setdefault(row.key, row)
