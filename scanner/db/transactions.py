"""``transactions``: the credits, one row per (chain, tx_hash, log_index)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any
from uuid import UUID

import msgspec
import structlog
from sqlalchemy import and_, bindparam, false, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.model import Credit, Finality
from scanner.core.plan import CreditRow, Key
from scanner.db import bulk
from scanner.db.payments import in_keys, raw, stored_key
from scanner.db.sql import in_strings, moment, now, table
from scanner.db.types import new_ids, parse_timestamp, to_decimal

log = structlog.get_logger(__name__)
UNFINAL = "transactions.status = 'pending'"  # ix_transactions_unfinal's WHERE

#: The columns a transfer seen again rewrites (its payment, block and state may have changed).
_REWRITTEN = (
    "payment_id",
    "block_number",
    "block_hash",
    "block_timestamp",
    "value",
    "amount",
    "confirmations",
    "status",
    "late",
    "updated_at",
)


class StoredTx(msgspec.Struct, frozen=True, gc=False):
    payment_key: Any  # the payment's id as stored
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    final: bool = False  # status 'confirmed'

    @property
    def key(self) -> tuple[str, int]:
        return (self.tx_hash, self.log_index)


def _stored(rows: Any) -> list[StoredTx]:
    return [
        StoredTx(stored_key(pid), tx, int(li), int(bn), bh, status == "confirmed")
        for pid, tx, li, bn, bh, status in rows
    ]


def _stored_select() -> Any:
    t = table("transactions")
    return select(
        raw(t.c.payment_id),
        t.c.tx_hash,
        t.c.log_index,
        t.c.block_number,
        t.c.block_hash,
        t.c.status,
    )


async def owners_of(
    session: AsyncSession, chain: str, tx_hashes: Collection[str]
) -> tuple[set[Any], frozenset[str]]:
    """The payments (ids as stored) holding a row of any of ``tx_hashes``, whatever its status:
    a transfer seen again must meet the row it already has, never become a second one. And
    which of ``tx_hashes`` have rows (the others' rows are new: :func:`write`)."""
    if not tx_hashes:
        return set(), frozenset()
    t = table("transactions")
    stmt = select(raw(t.c.payment_id), t.c.tx_hash).where(
        t.c.chain == chain, in_strings(session, t.c.tx_hash, tx_hashes)
    )
    rows = (await session.execute(stmt.distinct())).all()
    return {stored_key(r[0]) for r in rows}, frozenset(str(r[1]) for r in rows)


async def in_blocks(session: AsyncSession, chain: str, start: int, end: int) -> list[StoredTx]:
    """Credited (not orphaned) rows stored for blocks ``start..end``."""
    t = table("transactions")
    stmt = _stored_select().where(
        t.c.chain == chain,
        t.c.block_number >= start,
        t.c.block_number <= end,
        t.c.status != "orphaned",
    )
    return _stored(await session.execute(stmt))


async def any_credited(session: AsyncSession, chain: str, start: int, end: int) -> bool:
    """Whether a credited (not orphaned) row is stored for a block in ``start..end``."""
    t = table("transactions")
    stmt = (
        select(t.c.block_number)
        .where(
            t.c.chain == chain,
            t.c.block_number >= start,
            t.c.block_number <= end,
            t.c.status != "orphaned",
        )
        .limit(1)
    )
    return (await session.execute(stmt)).first() is not None


async def unfinal_below(session: AsyncSession, chain: str, below: int) -> set[tuple[int, str]]:
    """The blocks and hashes of the credits not final yet (``ix_transactions_unfinal``) in
    blocks below ``below``."""
    t = table("transactions")
    stmt = (
        select(t.c.block_number, t.c.block_hash)
        .where(text(UNFINAL), t.c.chain == chain, t.c.block_number < below)
        .distinct()
    )
    return {(int(n), str(h)) for n, h in await session.execute(stmt)}


def credits_statement(
    session: AsyncSession, whole: Collection[Any], partial: Collection[Any]
) -> Any:
    """The statement of :func:`credits_of`: every credit of the payments ``whole`` (ids as
    stored; ``ix_transactions_payment_id``), the not-yet-final ones of ``partial`` (the partial
    ``ix_transactions_unfinal``: a payment's final rows are not read)."""
    t = table("transactions")
    columns = (t.c.payment_id, t.c.tx_hash, t.c.log_index, t.c.block_number, t.c.block_hash)
    extra = (t.c.block_timestamp, t.c.value, t.c.late, t.c.status, t.c.token_id, t.c.verified_hash)
    condition: Any = in_keys(session, t.c.payment_id, list(whole)) if whole else false()
    if partial:
        # literally the index's WHERE (SQLite uses a partial index only for a term it can
        # prove implies it)
        unfinal = and_(in_keys(session, t.c.payment_id, list(partial)), text(UNFINAL))
        condition = or_(condition, unfinal) if whole else unfinal
    return select(*(raw(c) for c in (*columns, *extra))).where(condition)


async def credits_of(
    session: AsyncSession, tokens: Mapping[Any, UUID | None], *, partial: Collection[Any] = ()
) -> tuple[dict[Any, list[Credit]], set[Any]]:
    """The credits of the payments of ``tokens`` (ids as stored → the payment's token id), by
    key, in one statement (of those in ``partial``, only the ones not final yet); a credit of
    another token than the payment's now is ``foreign``. Each row is read on its own: one that
    cannot be (a value or time edited into nonsense) is logged (``transaction_invalid``), and
    its payment's key returned among the broken ones (left alone until the row is fixed),
    never the end of the others."""
    out: dict[Any, list[Credit]] = {}
    broken: set[Any] = set()
    if not tokens:
        return out, broken
    whole = [k for k in tokens if k not in partial]
    stmt = credits_statement(session, whole, [k for k in tokens if k in partial])
    for row in await session.execute(stmt):
        key = stored_key(row[0])
        try:
            credit = _credit(row, tokens.get(key))
        except (ValueError, TypeError, ArithmeticError) as exc:
            log.warning(
                "transaction_invalid", payment_id=str(key), tx_hash=str(row[1]), reason=str(exc)
            )
            broken.add(key)
            continue
        out.setdefault(key, []).append(credit)
    return out, broken


def _credit(row: Any, payment_token: UUID | None) -> Credit:
    _, tx, li, bn, bh, ts, value, late, status, token, verified = row
    token_id = None if token is None else (token if isinstance(token, UUID) else UUID(str(token)))
    units = to_decimal(value)
    if units != units.to_integral_value() or units < 0:
        raise ValueError(f"value {value!r:.40} is not a whole number of base units")
    return Credit(
        tx_hash=str(tx),
        log_index=int(li),
        block_number=int(bn),
        block_hash=str(bh),
        block_timestamp=int(parse_timestamp(ts).timestamp()),
        value=int(units),
        late=late in (True, 1, "1", "true", "t"),
        orphaned=status == "orphaned",
        final=status == "confirmed",
        foreign=token_id != payment_token,
        verified=verified is not None and verified == bh,
    )


def _values(row: CreditRow, stamp: Any) -> tuple[Any, ...]:
    """A row's :data:`_REWRITTEN` values, in that order."""
    c = row.credit
    return (
        row.payment_key,
        c.block_number,
        c.block_hash,
        moment(c.block_timestamp),
        c.value,
        row.amount,
        row.confirmations,
        row.status,
        c.late,
        stamp,
    )


_KEYED = ("tx_hash", "log_index", *_REWRITTEN)
_NEW = ("id", "chain", "from_address", "to_address", "token_id", "created_at", *_KEYED)


async def write(session: AsyncSession, chain: str, rows: Sequence[CreditRow]) -> None:
    """Insert the new rows and rewrite those seen again, in bulk (db/bulk.py), one statement
    each kind. A row whose transaction had no row when the range was loaded (``CreditRow.new``;
    the chain's lock is held since) is inserted as it is; one that had is upserted (a rescan
    meets the row it has). Were a row there after all, the insert fails and nothing is written:
    the range is read again, and then upserts it."""
    stamp = now()
    t = table("transactions")
    seen = [r for r in rows if r.sender is not None]
    changed = [r for r in rows if r.sender is None]
    key = ("chain", "tx_hash", "log_index")

    def row(r: CreditRow, id_: UUID) -> tuple[Any, ...]:
        return (id_, chain, r.sender, r.recipient, r.token_key, stamp, *_keyed(r, stamp))

    new = [r for r in seen if r.new]
    await bulk.insert(session, t, _NEW, bulk.Made(len(new), map(row, new, new_ids(len(new)))))
    rescanned = [r for r in seen if not r.new]
    seen_again = list(map(row, rescanned, new_ids(len(rescanned))))
    await bulk.upsert(session, t, _NEW, seen_again, key=key, rewrite=_REWRITTEN)
    again = [(chain, *_keyed(r, stamp)) for r in changed]
    await bulk.update(session, t, ("chain", *_KEYED), again, key=key)


async def orphan_unloaded(session: AsyncSession, chain: str, keys: Sequence[Key]) -> None:
    """Mark orphaned the rows of ``keys`` (credits in blocks the node replaced) whose payments
    a range could not load (left alone until an unreadable row of theirs is fixed): nothing
    else of theirs is written now, and their payments are recomputed from these rows once
    loaded again. A credit whose block is gone never stays pending, to be counted final by
    its depth later."""
    t = table("transactions")
    stmt = (
        update(t)
        .where(
            t.c.chain == chain,
            t.c.tx_hash == bindparam("key_tx"),
            t.c.log_index == bindparam("key_index"),
            t.c.status != "orphaned",
        )
        .values(status="orphaned", confirmations=0, updated_at=now())
    )
    await session.execute(stmt, [{"key_tx": tx, "key_index": index} for tx, index in keys])
    log.warning(
        "credit_orphaned_unloaded",
        chain=chain,
        credits=len(keys),
        keys=[f"{tx}:{index}" for tx, index in list(keys)[:20]],
    )


def _keyed(row: CreditRow, stamp: Any) -> tuple[Any, ...]:
    return (row.credit.tx_hash, row.credit.log_index, *_values(row, stamp))


async def count_confirmations(session: AsyncSession, chain: str, finality: Finality) -> None:
    """Count confirmations of the chain's not-yet-final rows; mark the final ones (with
    ``verify_urls``, only those a second provider agreed with: the others stay ``pending``, at
    the required count)."""
    t = table("transactions")
    pending = and_(t.c.chain == chain, t.c.status == "pending")
    deep = t.c.block_number <= finality.final_block
    counting = [pending, t.c.block_number <= finality.checked]
    if finality.required is not None:
        counting.append(~deep)
    await session.execute(
        update(t).where(*counting).values(confirmations=finality.checked - t.c.block_number + 1)
    )
    final: dict[str, Any] = {"status": "confirmed", "updated_at": now()}
    if finality.required is not None:  # counted up to the number that made it final
        final["confirmations"] = finality.required
    if finality.verify:
        if finality.required is not None:
            await session.execute(
                update(t).where(pending, deep).values(confirmations=finality.required)
            )
        await session.execute(
            update(t).where(pending, deep, t.c.verified_hash == t.c.block_hash).values(**final)
        )
        return
    await session.execute(update(t).where(pending, deep).values(**final))
