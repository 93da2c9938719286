"""One range, end to end, inside ONE database transaction (live scan and backfill share it).

    check links ─▶ decode ─▶ load payments (one query per kind, never per log)
               ─▶ ledger: per block, advance finality to block−1, then apply its transfers
               ─▶ advance to the newest checked block ─▶ write rows, events, blocks, cursor

The caller opens the transaction; this module never commits, so a crash anywhere leaves the
database as it was before the range.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.decode import decode_transfer_logs, recipients_of
from scanner.core.ledger import Ledger
from scanner.core.model import Event, Finality, Transfer
from scanner.core.reorg import check_link, logs_agree
from scanner.db import queries as q
from scanner.errors import RpcTransportError
from scanner.scan.context import ChainContext
from scanner.scan.fetch import RangeData
from scanner.scan.payments import (
    LoadedPayments,
    add_rows,
    addresses_of,
    build_ledger,
    load_into_ledger,
    payment_rows,
)


class ReorgDetected(Exception):
    """The range does not link to what is stored: walk back before going on."""

    def __init__(self, block: int) -> None:
        super().__init__(f"reorg detected at block {block}")
        self.block = block


class CursorMoved(Exception):
    """The cursor is not where this prefetched range expected it: drop the range."""


class RangeInconsistent(RpcTransportError):
    """Logs name block hashes the headers do not: the node changed under us; read again."""


@dataclass(slots=True)
class BatchResult:
    start: int
    end: int
    logs: int = 0
    matched: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    status_changes: list[tuple[str, str]] = field(default_factory=list)
    finality_violations: int = 0
    checked: int = 0


@dataclass(frozen=True, slots=True)
class BatchMode:
    """Live moves the cursor and stores block hashes; backfill does neither."""

    live: bool
    checked_floor: int = -1  # backfill: the live cursor (confirmations count from the higher)
    dry_run: bool = False
    check_stale: bool = True  # orphan stored transactions whose block hash the range replaced
    row_locks: bool = True  # off for a backfill dry run: it writes, but always rolls back


def verify_links(data: RangeData, parent: tuple[int, str] | None) -> None:
    """Raise ReorgDetected / RangeInconsistent when the range does not fit what we stored."""
    broken = check_link(data.headers, parent)
    if broken is not None:
        raise ReorgDetected(broken)
    if not logs_agree(data.logs, data.headers):
        raise RangeInconsistent("logs and headers name different block hashes; reading again")


async def apply_range(
    session: AsyncSession,
    ctx: ChainContext,
    data: RangeData,
    *,
    mode: BatchMode,
    tag_block: int | None,
    below: Mapping[int, int],
) -> BatchResult:
    """Apply ``data`` in the open transaction of ``session``.

    ``below`` maps block numbers just below the range to their timestamps (stored blocks, or the
    backfill's previous range), so finality can be judged at every block boundary.
    """
    timestamps = {**below, **data.timestamps}
    checked = max(data.end, mode.checked_floor)
    if checked > data.end:
        timestamps.update(
            await q.stored_timestamps(session, ctx.name, checked - ctx.reorg_depth, checked)
        )

    stale_keys: list[q.TxKeyRow] = []
    if mode.check_stale:
        stale = await q.live_txs_in_range(session, ctx.name, data.start, data.end)
        hashes = {h.number: h.hash for h in data.headers}
        stale_keys = [s for s in stale if hashes.get(s.block_number) != s.block_hash]
    end_finality = ctx.finality(checked, tag_block, timestamps)
    lock = mode.row_locks and not mode.dry_run
    times = [h.timestamp for h in data.headers]
    rows = await payment_rows(
        session,
        ctx,
        recipients=recipients_of(data.logs) | {t.to_address for t in data.native},
        extra_ids={s.payment_id for s in stale_keys},
        finality=end_finality,
        lock=lock,
        window=(min(times), max(times)) if times else None,
    )
    # Only logs to addresses some payment uses are decoded in full (wrong shapes are always).
    decoded = decode_transfer_logs(
        data.logs, ctx.tokens, data.timestamps, recipients=addresses_of(rows)
    )
    transfers = sorted(
        [*decoded.transfers, *data.native], key=lambda t: (t.block_number, t.log_index)
    )
    # A transfer seen before meets its row, whoever owns it now.
    owners = await q.owners_of(session, ctx.name, {t.tx_hash for t in transfers})
    await add_rows(session, rows, owners, lock=lock)
    loaded = await build_ledger(session, ctx, rows)
    result = BatchResult(data.start, data.end, logs=len(data.logs), skipped=dict(decoded.skipped))
    result.checked = checked
    ledger = loaded.ledger
    if stale_keys:
        ledger.orphan([(s.tx_hash, s.log_index) for s in stale_keys])
    by_block: dict[int, list[Transfer]] = defaultdict(list)
    for transfer in transfers:
        if transfer.to_address in loaded.by_address:
            by_block[transfer.block_number].append(transfer)
    applied: dict[tuple[str, int], Transfer] = {}
    for number in sorted(by_block):
        block_transfers = by_block[number]
        ids = {pid for t in block_transfers for pid in loaded.candidates(t)}
        step = number - 1  # what the live scan had checked when this block arrived
        ledger.advance(ctx.finality(step, tag_block, timestamps), ids)
        for transfer in block_transfers:
            credit = ledger.apply(transfer, loaded.candidates(transfer))
            if credit is not None:
                applied[transfer.key] = transfer
                result.matched += 1
    ledger.advance(end_finality)
    result.events = ledger.events()
    result.status_changes = [
        (str(e.status_from), str(e.status_to)) for e in result.events if e.type == "status_changed"
    ]
    result.finality_violations = sum(1 for e in result.events if e.type == "confirmed_reverted")
    if not mode.dry_run:
        await _persist(session, ctx, data, mode, ledger, loaded, applied, end_finality)
    return result


async def _persist(
    session: AsyncSession,
    ctx: ChainContext,
    data: RangeData,
    mode: BatchMode,
    ledger: Ledger,
    loaded: LoadedPayments,
    applied: Mapping[tuple[str, int], Transfer],
    finality: Finality,
) -> None:
    await q.save_credits(session, ctx, ledger.credits(), applied, loaded.token_of, finality)
    await q.update_payments(session, ctx, ledger.changed(), loaded.token_of)
    await q.insert_events(session, ctx, ledger.events(), loaded.token_of)
    await q.update_tx_confirmations(session, ctx.name, finality)
    if mode.live:
        await q.store_blocks(session, ctx.name, data.headers)
        await q.prune_blocks(
            session, ctx.name, data.end - ctx.reorg_depth - (ctx.required or 0) - 8
        )
        await q.set_cursor(session, ctx.name, data.last.number, data.last.hash)


async def advance_only(
    session: AsyncSession,
    ctx: ChainContext,
    *,
    checked: int,
    tag_block: int | None,
    timestamps: Mapping[int, int],
) -> BatchResult:
    """A tick with no new block: confirmations and expiry still move (the tag may have)."""
    finality = ctx.finality(checked, tag_block, timestamps)
    loaded = await load_into_ledger(session, ctx, ids=set(), finality=finality)
    loaded.ledger.advance(finality)
    result = BatchResult(checked + 1, checked, checked=checked)
    result.events = loaded.ledger.events()
    result.status_changes = [
        (str(e.status_from), str(e.status_to)) for e in result.events if e.type == "status_changed"
    ]
    await q.update_payments(session, ctx, loaded.ledger.changed(), loaded.token_of)
    await q.insert_events(session, ctx, result.events, loaded.token_of)
    await q.update_tx_confirmations(session, ctx.name, finality)
    return result
