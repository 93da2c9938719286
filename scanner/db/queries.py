"""The scanner's statements: one per kind of read or write, never one per log or per payment.

Written in SQLAlchemy Core over the models' tables so that bulk writes go out as one executemany
(asyncpg / sqlite) instead of one ORM object per row. Every function runs inside the caller's
transaction and never commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import (
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.decode import to_amount
from scanner.core.finality import credit_confirmations
from scanner.core.model import Credit, Event, Finality, Header, Transfer
from scanner.db.models import Base

OPEN = ("pending", "confirming")
_CHUNK = 500


def _t(name: str) -> Table:
    return Base.metadata.tables[name]


def _now() -> datetime:
    return datetime.now(UTC)


def _moment(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, tz=UTC)


def _unix(moment: datetime | None) -> int:
    if moment is None:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _in_strings(session: AsyncSession, expr: Any, values: Collection[str]) -> Any:
    """``expr IN values`` with ONE bound parameter however many values: ``IN (SELECT
    unnest(:array))`` on PostgreSQL, ``IN (SELECT value FROM json_each(:json))`` on SQLite; both
    plan as index lookups on ``expr`` per value. An IN list costs a placeholder per value to
    render and bind (thousands per range on the hot path) and must be cut into chunks."""
    items = sorted(values)
    if is_postgres(session):
        values_sql = select(func.unnest(bindparam(None, items, type_=ARRAY(String))))
    else:
        table = func.json_each(bindparam(None, orjson.dumps(items).decode(), type_=String))
        values_sql = select(table.table_valued("value").c.value)
    return expr.in_(values_sql.scalar_subquery())


@dataclass(frozen=True, slots=True)
class PaymentRow:
    id: UUID
    token_id: UUID | None
    chain: str
    address: str
    amount: Decimal
    status: str
    created_at: datetime
    expires_at: datetime
    amount_received: Decimal
    confirmations: int
    detected_in_block: int | None


@dataclass(frozen=True, slots=True)
class TxKeyRow:
    payment_id: UUID
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str


def _payment_columns() -> list[Any]:
    p = _t("payments")
    return [
        p.c.id,
        p.c.token_id,
        p.c.chain,
        p.c.address,
        p.c.amount,
        p.c.status,
        p.c.created_at,
        p.c.expires_at,
        p.c.amount_received,
        p.c.confirmations,
        p.c.detected_in_block,
    ]


def _payment_rows(result: Any) -> list[PaymentRow]:
    return [PaymentRow(*row) for row in result]


def _locked(stmt: Any, lock: bool) -> Any:
    return stmt.with_for_update() if lock else stmt


# ---------------------------------------------------------------- cursor and blocks


async def get_cursor(session: AsyncSession, chain: str) -> tuple[int, str | None] | None:
    cs = _t("chain_states")
    row = (
        await session.execute(
            select(cs.c.last_scanned_block, cs.c.last_scanned_hash).where(cs.c.chain == chain)
        )
    ).first()
    if row is None or row[0] is None:
        return None
    return int(row[0]), row[1]


async def init_cursor(
    session: AsyncSession, chain: str, block: int, block_hash: str | None
) -> None:
    cs = _t("chain_states")
    exists = (await session.execute(select(cs.c.chain).where(cs.c.chain == chain))).first()
    if exists is None:
        await session.execute(
            insert(cs).values(
                chain=chain,
                last_scanned_block=block,
                last_scanned_hash=block_hash,
                updated_at=_now(),
            )
        )


async def set_cursor(session: AsyncSession, chain: str, block: int, block_hash: str | None) -> None:
    cs = _t("chain_states")
    await session.execute(
        update(cs)
        .where(cs.c.chain == chain)
        .values(last_scanned_block=block, last_scanned_hash=block_hash, updated_at=_now())
    )


async def record_reorg(session: AsyncSession, chain: str, depth: int) -> None:
    cs = _t("chain_states")
    await session.execute(
        update(cs)
        .where(cs.c.chain == chain)
        .values(last_reorg_at=_now(), last_reorg_depth=depth, updated_at=_now())
    )


async def stored_headers(session: AsyncSession, chain: str, low: int, high: int) -> list[Header]:
    b = _t("blocks")
    rows = await session.execute(
        select(b.c.number, b.c.hash, b.c.parent_hash, b.c.timestamp)
        .where(b.c.chain == chain, b.c.number >= low, b.c.number <= high)
        .order_by(b.c.number)
    )
    return [Header(int(n), h, p, _unix(ts)) for n, h, p, ts in rows]


async def stored_timestamps(
    session: AsyncSession, chain: str, low: int, high: int
) -> dict[int, int]:
    return {h.number: h.timestamp for h in await stored_headers(session, chain, low, high)}


async def store_blocks(session: AsyncSession, chain: str, headers: Sequence[Header]) -> None:
    if not headers:
        return
    b = _t("blocks")
    await session.execute(
        delete(b).where(
            b.c.chain == chain, b.c.number >= headers[0].number, b.c.number <= headers[-1].number
        )
    )
    await session.execute(
        insert(b),
        [
            {
                "chain": chain,
                "number": h.number,
                "hash": h.hash,
                "parent_hash": h.parent_hash,
                "timestamp": _moment(h.timestamp),
            }
            for h in headers
        ],
    )


async def prune_blocks(session: AsyncSession, chain: str, below: int) -> None:
    b = _t("blocks")
    await session.execute(delete(b).where(b.c.chain == chain, b.c.number < below))


async def delete_blocks_above(session: AsyncSession, chain: str, number: int) -> None:
    b = _t("blocks")
    await session.execute(delete(b).where(b.c.chain == chain, b.c.number > number))


# ---------------------------------------------------------------- payments


async def payments_by_address(
    session: AsyncSession,
    chain: str,
    addresses: Collection[str],
    *,
    lock: bool,
    window: tuple[datetime, datetime] | None = None,
) -> list[PaymentRow]:
    """The payments on ``chain`` at ``addresses`` (compared lower-case) that a transfer can go to.

    Without ``window``: every one. With ``window = (lo, hi)`` (the range's first and last block
    times plus the grace): the open ones, and of the final ones (confirmed, expired) only those
    that can be some transfer's newest candidate (rule 4), i.e. created in ``[lo, hi]``, or the
    newest created by ``lo`` on each address and token. Older final payments can never be chosen
    again, and loading them (and all their transactions) each range made scans of reused
    addresses slower with every payment they had ever had.
    """
    if not addresses:
        return []
    p = _t("payments")
    condition: Any = _in_strings(session, func.lower(p.c.address), addresses)
    if window is not None:
        lo, hi = window
        older = p.alias("older")
        newest_by_lo = (
            select(func.max(older.c.created_at))
            .where(
                older.c.chain == p.c.chain,
                func.lower(older.c.address) == func.lower(p.c.address),
                older.c.token_id.is_not_distinct_from(p.c.token_id),
                older.c.status.not_in(OPEN),
                _compare(session, older.c.created_at, "<=", lo),
            )
            .scalar_subquery()
        )
        recent = and_(
            _compare(session, p.c.created_at, ">=", lo), _compare(session, p.c.created_at, "<=", hi)
        )
        condition = and_(
            condition, or_(p.c.status.in_(OPEN), recent, p.c.created_at == newest_by_lo)
        )
    stmt = select(*_payment_columns()).where(p.c.chain == chain, condition)
    return _payment_rows(await session.execute(_locked(stmt, lock)))


async def owners_of(session: AsyncSession, chain: str, tx_hashes: Collection[str]) -> set[UUID]:
    """Payments holding a transactions row of any of ``tx_hashes`` (whatever its status): a
    transfer seen again must meet the row it already has, never become a second one."""
    if not tx_hashes:
        return set()
    t = _t("transactions")
    rows = await session.execute(
        select(t.c.payment_id)
        .where(t.c.chain == chain, _in_strings(session, t.c.tx_hash, tx_hashes))
        .distinct()
    )
    return {r[0] for r in rows}


async def payments_by_id(
    session: AsyncSession, ids: Collection[UUID], *, lock: bool
) -> list[PaymentRow]:
    p = _t("payments")
    out: list[PaymentRow] = []
    for chunk in _chunks(sorted(ids)):
        stmt = select(*_payment_columns()).where(p.c.id.in_(list(chunk)))
        out.extend(_payment_rows(await session.execute(_locked(stmt, lock))))
    return out


async def payments_to_advance(
    session: AsyncSession, chain: str, expiry_cutoff: datetime | None, *, lock: bool
) -> list[PaymentRow]:
    """Open payments whose state can move with the checked block alone.

    Those holding a not-yet-final transaction (confirmations count up, confirming may confirm),
    and pending ones whose ``expires_at`` is before the newest final block's time.
    """
    p, t = _t("payments"), _t("transactions")
    unfinal = select(t.c.payment_id).where(t.c.chain == chain, t.c.status == "pending")
    condition: Any = p.c.id.in_(unfinal)  # also a confirmed payment's fresh overpayment
    if expiry_cutoff is not None:
        condition = or_(
            condition,
            and_(p.c.status == "pending", _before(session, p.c.expires_at, expiry_cutoff)),
        )
    stmt = select(*_payment_columns()).where(p.c.chain == chain, condition)
    return _payment_rows(await session.execute(_locked(stmt, lock)))


def _compare(session: AsyncSession, column: Any, op: str, moment: datetime) -> Any:
    """``column <op> moment`` for a timestamp column, on SQLite as julian days (any ISO form)."""
    if is_postgres(session):
        return column.op(op)(moment)
    iso = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return func.julianday(column).op(op)(func.julianday(iso))


def _before(session: AsyncSession, column: Any, moment: datetime) -> Any:
    if is_postgres(session):
        return column < moment
    # SQLite: compare as julian days so any ISO form a gateway wrote compares correctly.
    iso = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return func.julianday(column) < func.julianday(iso)


async def unseen_payments(session: AsyncSession, chain: str) -> list[PaymentRow]:
    """Payments the scanner has not looked at yet (``seen_at_block`` is NULL)."""
    p = _t("payments")
    stmt = select(*_payment_columns()).where(p.c.chain == chain, p.c.seen_at_block.is_(None))
    return _payment_rows(await session.execute(stmt))


async def mark_seen(session: AsyncSession, ids: Sequence[UUID], block: int) -> None:
    rows = [{"id": pid, "seen_at_block": block} for pid in ids]
    await _update_by_id(session, _t("payments"), rows)


async def count_open_payments(session: AsyncSession, chain: str) -> int:
    p = _t("payments")
    stmt = select(func.count()).select_from(p).where(p.c.chain == chain, p.c.status.in_(OPEN))
    return int((await session.execute(stmt)).scalar_one())


async def native_addresses(session: AsyncSession, chain: str) -> set[str]:
    """Addresses of the chain's native-coin payments, when any of them is still open."""
    p = _t("payments")
    any_open = (
        select(p.c.id)
        .where(p.c.chain == chain, p.c.token_id.is_(None), p.c.status.in_(OPEN))
        .limit(1)
    )
    if (await session.execute(any_open)).first() is None:
        return set()
    rows = await session.execute(
        select(func.lower(p.c.address)).where(p.c.chain == chain, p.c.token_id.is_(None)).distinct()
    )
    return {r[0] for r in rows}


async def update_payments(
    session: AsyncSession,
    ctx: Any,
    changed: Mapping[UUID, Any],
    token_of: Mapping[UUID, UUID | None],
) -> None:
    """Write the ledger's outcomes (status, received, confirmations, first block)."""
    if not changed:
        return
    p = _t("payments")
    now = _now()
    rows = [
        {
            "id": pid,
            "status": out.status,
            "amount_received": to_amount(out.amount_received, ctx.decimals_of(token_of.get(pid))),
            "confirmations": out.confirmations,
            "detected_in_block": out.detected_in_block,
            "updated_at": now,
        }
        for pid, out in changed.items()
    ]
    await _update_by_id(session, p, rows)


async def _update_by_id(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    """One executemany ``UPDATE table SET … WHERE id = …``; every row has the same keys."""
    if not rows:
        return
    columns = [name for name in rows[0] if name != "id"]
    stmt = (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values({name: bindparam(f"b_{name}") for name in columns})
    )
    await session.execute(stmt, [{f"b_{k}": v for k, v in row.items()} for row in rows])


# ---------------------------------------------------------------- transactions


async def credits_of(
    session: AsyncSession, payment_ids: Collection[UUID]
) -> dict[UUID, list[Credit]]:
    t = _t("transactions")
    out: dict[UUID, list[Credit]] = {}
    for chunk in _chunks(sorted(payment_ids)):
        rows = await session.execute(
            select(
                t.c.payment_id,
                t.c.tx_hash,
                t.c.log_index,
                t.c.block_number,
                t.c.block_hash,
                t.c.block_timestamp,
                t.c.value,
                t.c.late,
                t.c.status,
            ).where(t.c.payment_id.in_(list(chunk)))
        )
        for pid, tx, li, bn, bh, ts, value, late, status in rows:
            out.setdefault(pid, []).append(
                Credit(
                    tx_hash=tx,
                    log_index=int(li),
                    block_number=int(bn),
                    block_hash=bh,
                    block_timestamp=_unix(ts),
                    value=int(value),
                    late=bool(late),
                    orphaned=status == "orphaned",
                    final=status == "confirmed",
                )
            )
    return out


async def live_txs_in_range(
    session: AsyncSession, chain: str, start: int, end: int
) -> list[TxKeyRow]:
    """Credited (not orphaned) transactions stored for blocks ``start..end``."""
    t = _t("transactions")
    rows = await session.execute(
        select(t.c.payment_id, t.c.tx_hash, t.c.log_index, t.c.block_number, t.c.block_hash).where(
            t.c.chain == chain,
            t.c.block_number >= start,
            t.c.block_number <= end,
            t.c.status != "orphaned",
        )
    )
    return [TxKeyRow(pid, tx, int(li), int(bn), bh) for pid, tx, li, bn, bh in rows]


async def save_credits(
    session: AsyncSession,
    ctx: Any,
    credits: Mapping[tuple[str, int], tuple[UUID, Credit]],
    transfers: Mapping[tuple[str, int], Transfer],
    token_of: Mapping[UUID, UUID | None],
    finality: Finality,
) -> None:
    """Insert new transactions and update those seen again (one row per (chain, tx, log))."""
    if not credits:
        return
    t = _t("transactions")
    existing = await _existing_keys(session, ctx.name, list(credits))
    now = _now()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for key, (pid, credit) in credits.items():
        token_id = token_of.get(pid)
        row = _credit_row(ctx, pid, credit, token_id, finality)
        if key in existing:
            updates.append(row | {"id": existing[key], "updated_at": now})
            continue
        transfer = transfers.get(key)
        if transfer is None:  # an orphaning of a row that must exist; nothing to insert
            continue
        row |= {
            "id": uuid.uuid4(),
            "chain": ctx.name,
            "tx_hash": credit.tx_hash,
            "log_index": credit.log_index,
            "from_address": transfer.from_address,
            "to_address": transfer.to_address,
            "token_id": token_id,
            "created_at": now,
            "updated_at": now,
        }
        inserts.append(row)
    if inserts:
        await session.execute(insert(t), inserts)
    await _update_by_id(session, t, updates)


def _credit_row(
    ctx: Any, pid: UUID, credit: Credit, token_id: UUID | None, finality: Finality
) -> dict[str, Any]:
    if credit.orphaned:
        status, confirmations = "orphaned", 0
    else:
        confirmations = credit_confirmations(credit.block_number, finality)
        status = "confirmed" if credit.block_number <= finality.final_block else "pending"
    return {
        "payment_id": pid,
        "block_number": credit.block_number,
        "block_hash": credit.block_hash,
        "block_timestamp": _moment(credit.block_timestamp),
        "value": credit.value,
        "amount": to_amount(credit.value, ctx.decimals_of(token_id)),
        "confirmations": confirmations,
        "status": status,
        "late": credit.late,
    }


async def _existing_keys(
    session: AsyncSession, chain: str, keys: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], UUID]:
    t = _t("transactions")
    out: dict[tuple[str, int], UUID] = {}
    hashes = sorted({k[0] for k in keys})
    for chunk in _chunks(hashes):
        rows = await session.execute(
            select(t.c.tx_hash, t.c.log_index, t.c.id).where(
                t.c.chain == chain, t.c.tx_hash.in_(list(chunk))
            )
        )
        for tx, li, tid in rows:
            out[(tx, int(li))] = tid
    return out


async def update_tx_confirmations(session: AsyncSession, chain: str, finality: Finality) -> None:
    """Count confirmations of the chain's not-yet-final transactions; mark the final ones."""
    t = _t("transactions")
    pending = and_(t.c.chain == chain, t.c.status == "pending")
    await session.execute(
        update(t)
        .where(pending, t.c.block_number <= finality.checked)
        .values(confirmations=finality.checked - t.c.block_number + 1)
    )
    final: dict[str, Any] = {"status": "confirmed", "updated_at": _now()}
    if finality.required is not None:  # counted up to the number that made it final
        final["confirmations"] = finality.required
    await session.execute(
        update(t).where(pending, t.c.block_number <= finality.final_block).values(**final)
    )


async def orphan_candidates_above(session: AsyncSession, chain: str, number: int) -> list[TxKeyRow]:
    t = _t("transactions")
    rows = await session.execute(
        select(t.c.payment_id, t.c.tx_hash, t.c.log_index, t.c.block_number, t.c.block_hash).where(
            t.c.chain == chain, t.c.block_number > number, t.c.status != "orphaned"
        )
    )
    return [TxKeyRow(pid, tx, int(li), int(bn), bh) for pid, tx, li, bn, bh in rows]


# ---------------------------------------------------------------- events


def _event_data(event: Event, decimals: int) -> dict[str, Any]:
    data = dict(event.data)
    for key in ("value", "amount_received"):
        base = data.get(key)
        if isinstance(base, int) and not isinstance(base, bool):
            data[key] = str(base)
            name = "amount" if key == "value" else "amount_received_decimal"
            data[name] = str(to_amount(base, decimals))
    return data


async def insert_events(
    session: AsyncSession,
    ctx: Any,
    events: Sequence[Event],
    token_of: Mapping[UUID, UUID | None],
) -> None:
    """Append events to the outbox; on PostgreSQL serialized so ids appear in commit order."""
    if not events:
        return
    e = _t("payment_events")
    if is_postgres(session):
        from scanner.db.locks import events_xact_lock

        await events_xact_lock(session)
    now = _now()
    rows = [
        {
            "payment_id": ev.payment_id,
            "type": ev.type,
            "status_from": ev.status_from,
            "status_to": ev.status_to,
            "data": _event_data(ev, _decimals(ctx, token_of.get(ev.payment_id))),
            "created_at": now,
        }
        for ev in events
    ]
    await session.execute(insert(e), rows)
    if is_postgres(session):
        await session.execute(text("NOTIFY payment_events"))


def _decimals(ctx: Any, token_id: UUID | None) -> int:
    try:
        return int(ctx.decimals_of(token_id))
    except KeyError:
        return 0
