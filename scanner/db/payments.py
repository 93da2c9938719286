"""Reads of ``payments`` (the gateway's rows) and the scanner's writes of the columns it owns.

Every read a range makes is a fixed number of statements whatever the number of payments, and
each reads through an index that serves exactly its question, so that its cost follows the
range, not the open-payment book: by address (the candidates of the range's transfers), by id,
and the open payments the checked block moves (those holding a not-yet-final credit, the pending
ones it expires). The ``*_statement(s)`` builders are what the functions issue; the plan tests
EXPLAIN them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import msgspec
import structlog
from sqlalchemy import and_, any_, bindparam, func, literal, or_, select, text, type_coerce
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.types import NullType

from scanner.core.plan import PaymentUpdate
from scanner.db import bulk
from scanner.db.sql import (
    OPEN,
    NotIndexed,
    chunks,
    compare,
    in_strings,
    is_postgres,
    locked,
    now,
    table,
    update_by_id,
)
from scanner.db.types import StoredKey
from scanner.errors import PaymentLocked


class RawPayment(msgspec.Struct, frozen=True):
    """A ``payments`` row exactly as the gateway wrote it: no value is converted here, so that
    no row can fail the read of the others (scan/rows.py parses each one on its own).

    ``key`` is the id as stored: what every write about this payment binds (see
    :class:`~scanner.db.types.StoredKey`)."""

    key: Any
    token_id: Any
    address: Any
    amount: Any
    status: Any
    created_at: Any
    expires_at: Any
    amount_received: Any = None  # as the scanner last wrote it (checked against payment_sums)


log = structlog.get_logger(__name__)
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL: lock_timeout expired


def raw(column: Any) -> Any:
    """``column`` read without the type's conversion (a bad value must not fail the query)."""
    return type_coerce(column, NullType())


def stored_key(value: Any) -> Any:
    return StoredKey(value) if isinstance(value, str) else value


def _select() -> Any:
    p = table("payments")
    columns = (p.c.id, p.c.token_id, p.c.address, p.c.amount, p.c.status)
    times = (p.c.created_at, p.c.expires_at)
    return select(*(raw(c) for c in (*columns, *times, p.c.amount_received)))


async def _rows(session: AsyncSession, stmt: Any, lock: bool) -> list[RawPayment]:
    if lock and is_postgres(session):
        return await _locked_rows(session, stmt)
    result = await session.execute(locked(stmt, lock))
    return [RawPayment(stored_key(row[0]), *row[1:]) for row in result]


async def _locked_rows(session: AsyncSession, stmt: Any) -> list[RawPayment]:
    rows = await _lock_or_name(session, stmt)
    return [RawPayment(stored_key(row[0]), *row[1:]) for row in rows]


async def _lock_or_name(session: AsyncSession, stmt: Any) -> list[Any]:
    """``stmt`` (its first column the payment's id) FOR UPDATE under a savepoint: when a row
    lock is not granted within the lock timeout, the rows another transaction holds are named
    (those ``SKIP LOCKED`` leaves out) and :class:`~scanner.errors.PaymentLocked` raised; the
    transaction stays usable."""
    try:
        async with session.begin_nested():
            return list(await session.execute(stmt.with_for_update()))
    except DBAPIError as exc:
        _unless_lock_timeout(exc)
    free = {row[0] for row in await session.execute(stmt.with_for_update(skip_locked=True))}
    held = [stored_key(row[0]) for row in await session.execute(stmt) if row[0] not in free]
    raise PaymentLocked(held)


def _unless_lock_timeout(exc: DBAPIError) -> None:
    """Raise ``exc`` again unless a row lock was not granted within the lock timeout."""
    if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
        raise exc


async def _write_keys(session: AsyncSession, keys: Sequence[Any], stmt: Any) -> None:
    """Run ``stmt``, an UPDATE of the rows ``keys``, under a savepoint (PostgreSQL): a row the
    gateway holds past the lock timeout is named by :class:`~scanner.errors.PaymentLocked`,
    never left to fail the transaction as a bare lock timeout."""
    if not is_postgres(session):
        await session.execute(stmt)
        return
    try:
        async with session.begin_nested():
            await session.execute(stmt)
            return
    except DBAPIError as exc:
        _unless_lock_timeout(exc)
    p = table("payments")
    await _lock_or_name(session, select(p.c.id).where(in_keys(session, p.c.id, keys)))
    await session.execute(stmt)  # the locks came free meanwhile: held now


def address_statement(
    session: AsyncSession,
    chain: str,
    addresses: Collection[str],
    window: tuple[datetime, datetime] | None = None,
) -> Any:
    """The statement of :func:`by_address` (``ix_payments_lookup``, one probe per address)."""
    p = table("payments")
    condition: Any = in_strings(session, func.lower(p.c.address), addresses)
    if window is not None:
        condition = and_(condition, _choosable(session, chain, addresses, window))
    return _select().where(p.c.chain == chain, condition)


async def by_address(
    session: AsyncSession,
    chain: str,
    addresses: Collection[str],
    *,
    lock: bool,
    window: tuple[datetime, datetime] | None = None,
) -> list[RawPayment]:
    """The payments on ``chain`` at ``addresses`` (compared lower-case) that a transfer can go to.

    Without ``window``: every one. With ``window = (lo, hi)`` (the range's first and last block
    times plus the grace): the open ones, and of the final ones only those that can be some
    transfer's newest candidate (rule 4): created in ``[lo, hi]``, or the newest created by ``lo``
    on each address and token. Older final payments can never be chosen again.
    """
    if not addresses:
        return []
    stmt = address_statement(session, chain, addresses, window)
    return await _rows(session, stmt, lock)


def _choosable(
    session: AsyncSession,
    chain: str,
    addresses: Collection[str],
    window: tuple[datetime, datetime],
) -> Any:
    """Open, created in the window, or the newest final one created by ``lo`` on its address
    and token. The last is ONE uncorrelated subquery over the range's addresses (``rank()``
    per address and token, ties kept), evaluated once: a correlated ``max()`` per row costs
    the square of an address's history and, on a table not analyzed yet, minutes a range."""
    p = table("payments")
    lo, hi = window
    older = p.alias("older")
    newest = (
        func.rank()
        .over(
            partition_by=(func.lower(older.c.address), older.c.token_id),
            order_by=older.c.created_at.desc(),
        )
        .label("newest")
    )
    final = (
        select(older.c.id, newest)
        .where(
            older.c.chain == chain,
            in_strings(session, func.lower(older.c.address), addresses),
            older.c.status.not_in(OPEN),
            compare(older.c.created_at, "<=", lo),
        )
        .subquery("final")
    )
    newest_by_lo = select(final.c.id).where(final.c.newest == 1)
    recent = and_(compare(p.c.created_at, ">=", lo), compare(p.c.created_at, "<=", hi))
    return or_(p.c.status.in_(OPEN), recent, p.c.id.in_(newest_by_lo))


def in_keys(session: AsyncSession, column: Any, keys: Collection[Any]) -> Any:
    """``column`` (a payment id, as stored) is one of ``keys``, with ONE bound parameter however
    many: ``= ANY(:uuid[])`` on PostgreSQL, ``IN (SELECT value FROM json_each(:json))`` on SQLite
    (ids as stored, text, matched verbatim). An index on ``column`` serves both."""
    if is_postgres(session):
        ids = [k if isinstance(k, uuid.UUID) else uuid.UUID(str(k)) for k in keys]
        return column == any_(bindparam(None, ids, type_=ARRAY(PG_UUID(as_uuid=True))))
    return in_strings(session, raw(column), [str(k) for k in keys])


async def by_key(session: AsyncSession, keys: Collection[Any], *, lock: bool) -> list[RawPayment]:
    """The rows of ``keys`` (ids as stored), one statement."""
    p = table("payments")
    return await _rows(session, _select().where(in_keys(session, p.c.id, keys)), lock)


def advancing_statements(
    chain: str, expiry_cutoff: datetime | None, *, looked_at_only: bool = True
) -> list[Any]:
    """The statements of :func:`to_advance`, one per question, each served by its own index:
    the payments holding a not-yet-final transaction (``ix_transactions_chain_status``, then the
    primary key), and the pending ones the cutoff expires (``ix_payments_expiring``). One
    statement with ``OR`` between them would read every open payment."""
    p, t = table("payments"), table("transactions")
    unfinal = select(t.c.payment_id).where(t.c.chain == chain, t.c.status == "pending")
    # also a confirmed payment's fresh overpayment; the primary key serves it, never the
    # chain's index (SQLite without statistics would read the chain's whole book)
    statements = [_select().where(NotIndexed(p.c.chain) == chain, p.c.id.in_(unfinal))]
    if expiry_cutoff is not None:
        expiring = compare(p.c.expires_at, "<", expiry_cutoff)
        # the live scan: a row not looked at yet waits for its look-back (which runs beside
        # the scan and may find a transfer in time); a backfill reads the history itself
        terms = [p.c.chain == chain, p.c.status == "pending", expiring]
        if looked_at_only:
            terms.append(p.c.seen_at_block.is_not(None))
        statements.append(_select().where(*terms))
    return statements


async def to_advance(
    session: AsyncSession,
    chain: str,
    expiry_cutoff: datetime | None,
    *,
    lock: bool,
    looked_at_only: bool = True,
) -> list[RawPayment]:
    """Open payments whose state can move with the checked block alone.

    Those holding a not-yet-final transaction (confirmations count up, confirming may confirm),
    and pending ones whose ``expires_at`` is before the newest final block's time, once looked
    at (an unseen row is expired after its look-back, which runs beside the scan).
    """
    found: dict[Any, RawPayment] = {}
    for stmt in advancing_statements(chain, expiry_cutoff, looked_at_only=looked_at_only):
        for row in await _rows(session, stmt, lock):
            found.setdefault(row.key, row)
    return list(found.values())


UNSEEN_PAGE = 2_000
VACUUM_AFTER = 20_000  # rows marked seen in one catch-up


async def vacuum(sessions: async_sessionmaker[AsyncSession], chain: str, marked: int) -> None:
    """PostgreSQL, after one catch-up marked many rows seen: ``VACUUM (ANALYZE) payments``, as
    autovacuum would a minute later. Until then every tick's look for unseen rows steps over
    the index entries those updates left dead (10 ms a tick per 100,000). Not fatal: a
    server that refuses (privileges) leaves it to autovacuum."""
    async with sessions() as session:
        if not is_postgres(session):
            return
        engine = session.bind
    if not isinstance(engine, AsyncEngine):
        return
    started = time.perf_counter()
    try:
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(text("VACUUM (ANALYZE) payments"))
    except DBAPIError as exc:
        log.warning("payments_vacuum_failed", chain=chain, rows=marked, reason=str(exc.orig))
        return
    seconds = round(time.perf_counter() - started, 3)
    log.info("payments_vacuumed", chain=chain, rows=marked, seconds=seconds)


def unseen_statement(chain: str, limit: int = UNSEEN_PAGE) -> Any:
    """Up to ``limit`` rows not looked at yet (the partial index ``ix_payments_unseen``)."""
    p = table("payments")
    return _select().where(p.c.chain == chain, p.c.seen_at_block.is_(None)).limit(limit)


async def unseen(
    session: AsyncSession,
    chain: str,
    limit: int = UNSEEN_PAGE,
    *,
    skip: Collection[Any] = (),
) -> list[RawPayment]:
    """A page of the payments the scanner has not looked at yet (``seen_at_block`` is NULL),
    but those of ``skip`` (ids as stored); marking them seen moves the next call to the next
    page."""
    stmt = unseen_statement(chain, limit)
    if skip:
        stmt = stmt.where(~in_keys(session, table("payments").c.id, skip))
    async with index_scan_only(session):
        return await _rows(session, stmt, False)


@asynccontextmanager
async def index_scan_only(session: AsyncSession) -> AsyncIterator[None]:
    """PostgreSQL: no bitmap scan for the statements inside (then the server's setting again).

    The look's page of unseen rows, on a table without statistics, was planned as a bitmap
    scan of ``ix_payments_unseen`` (a guess of a few rows makes it look as cheap as an index
    scan): the whole index, with the entries of the rows already marked seen, for a page of
    2,000; at 1,000,000 rows, 52 ms a page's read against 20 ms, the server's time which the
    live scan shares. An index scan stops after the page's rows, and marks dead the entries of
    marked rows it steps over, so that the next page skips them."""
    if not is_postgres(session):
        yield
        return
    await session.execute(text("SET LOCAL enable_bitmapscan = off"))
    yield  # (a statement that fails ends the transaction, and the setting with it)
    await session.execute(text("SET LOCAL enable_bitmapscan TO DEFAULT"))


def edited_statement(chain: str, limit: int) -> Any:
    """Up to ``limit`` edited rows of ``chain``: the WHERE names ``edited`` bare, exactly as the
    partial index ``ix_payments_edited`` does (SQLite uses a partial index only for a term
    identical to its WHERE; ``edited = 1`` or ``edited IS 1`` would read every row)."""
    p = table("payments")
    return _select().where(p.c.chain == chain, text("payments.edited")).limit(limit)


async def edited(session: AsyncSession, chain: str, *, limit: int) -> list[RawPayment]:
    """Up to ``limit`` rows of ``chain`` the gateway edited since the scanner last looked,
    locked (the partial index ``ix_payments_edited`` serves it)."""
    return await _rows(session, edited_statement(chain, limit), True)


async def any_edited(session: AsyncSession, chain: str) -> bool:
    """Whether the gateway edited some row of ``chain`` (one look into ``ix_payments_edited``,
    no lock): the tick takes the chain's lock only when there is an edit to follow."""
    stmt = edited_statement(chain, 1)
    return (await session.execute(stmt)).first() is not None


async def clear_edited(session: AsyncSession, keys: Sequence[Any]) -> None:
    """The edits of ``keys`` are followed; each row is looked back for again, as it now is
    (``seen_at_block`` NULL: the catch-up reads its address from its created_at)."""
    p = table("payments")
    rows = [{"id": key, "edited": False, "seen_at_block": None} for key in keys]
    await update_by_id(session, p, rows, also={"scanner_rev": p.c.scanner_rev + 1})


async def look_back_for_tokens(session: AsyncSession, chain: str, token_keys: Sequence[Any]) -> int:
    """The open payments of these tokens are looked back for again (a token enabled again: its
    logs were not read while it was off); how many."""
    p = table("payments")
    stmt = (
        sql_update(p)
        .where(p.c.chain == chain, raw(p.c.token_id).in_(list(token_keys)), p.c.status.in_(OPEN))
        .values(seen_at_block=None)
    )
    result = await session.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)


async def mark_seen(session: AsyncSession, keys: Sequence[Any], block: int | None) -> None:
    """The cursor when the scanner looked at these rows (None: look back for them again): one
    ``UPDATE … WHERE id IN (one array parameter)`` a chunk of 10,000, not one per row."""
    p = table("payments")
    for chunk in chunks(list(keys), 10_000):
        where = in_keys(session, p.c.id, chunk)
        await _write_keys(session, chunk, sql_update(p).where(where).values(seen_at_block=block))


async def count_open(session: AsyncSession, chain: str) -> int:
    p = table("payments")
    stmt = select(func.count()).select_from(p).where(p.c.chain == chain, p.c.status.in_(OPEN))
    return int((await session.execute(stmt)).scalar_one())


def native_statements(
    session: AsyncSession, chain: str, addresses: Collection[str]
) -> tuple[Any, Any]:
    """Whether the chain has an open native-coin payment (the partial index
    ``ix_payments_native``), and which of ``addresses`` some native payment uses
    (``ix_payments_lookup``, one probe per address): the range's recipients are looked up, the
    native book is never read whole."""
    p = table("payments")
    native = and_(p.c.chain == chain, p.c.token_id.is_(None))
    any_open = select(p.c.id).where(native, p.c.status.in_(OPEN)).limit(1)
    wanted = {a.lower() for a in addresses}
    among = select(func.lower(p.c.address)).where(
        native, in_strings(session, func.lower(p.c.address), wanted)
    )
    return any_open, among.distinct()


async def any_native_open(session: AsyncSession, chain: str) -> bool:
    """Whether any native-coin payment of ``chain`` is open (then full blocks are read)."""
    any_open, _ = native_statements(session, chain, ())
    return (await session.execute(any_open)).first() is not None


async def native_addresses(session: AsyncSession, chain: str) -> set[str]:
    """Every native-coin payment's address of ``chain`` when one of them is open (``scanner
    backfill``, whose dry run has one session for everything; ``ix_payments_native`` serves
    it). The live scan looks up each range's recipients instead (:func:`native_among`)."""
    if not await any_native_open(session, chain):
        return set()
    p = table("payments")
    native = and_(p.c.chain == chain, p.c.token_id.is_(None))
    rows = await session.execute(select(func.lower(p.c.address)).where(native).distinct())
    return {r[0] for r in rows}


def watched_statement(chain: str, limit: int, *, as_written: bool = False) -> Any:
    """Up to ``limit + 1`` distinct ``lower(address)`` of ``chain``, in order: a walk down
    ``ix_payments_lookup``, one probe for each address to find the next one (a recursive CTE);
    ``as_written``: with the least and the greatest spelling stored under each (two probes).

    Not ``SELECT DISTINCT … LIMIT``: on PostgreSQL without statistics (a gateway's fresh rows,
    autovacuum not by yet) the planner guessed a few rows for the chain and hashed all of its
    payments, a second and 60 MB of temporary files at 1,000,000, every sweep. A probe
    (``ORDER BY … LIMIT 1``, or an equality on both of the index's columns) is read from the
    index whatever the statistics. Each probe is a scalar subquery: SQLite allows no ``LIMIT``
    in a compound's first member."""
    p = table("payments")
    key = func.lower(p.c.address)

    def after(lower: Any) -> Any:
        terms = [p.c.chain == chain] + ([] if lower is None else [key > lower])
        return select(key).where(*terms).order_by(key).limit(1).scalar_subquery()

    first = select(after(None).label("a"), literal(1).label("n"))
    walk = first.cte("walk", recursive=True)
    step = select(after(walk.c.a), walk.c.n + 1).where(walk.c.a.is_not(None), walk.c.n <= limit)
    walk = walk.union_all(step)
    if not as_written:
        return select(walk.c.a).where(walk.c.a.is_not(None))

    def spelling(extreme: Any) -> Any:
        stmt = select(extreme(p.c.address)).where(p.c.chain == chain, key == walk.c.a)
        return stmt.scalar_subquery()

    columns = (walk.c.a, spelling(func.min), spelling(func.max))
    return select(*columns).where(walk.c.a.is_not(None))


def spellings_statement(chain: str, lower: str) -> Any:
    """The addresses of ``chain`` stored as ``lower`` in any letter case (the lookup index, both
    of its columns)."""
    p = table("payments")
    return select(p.c.address).where(p.c.chain == chain, func.lower(p.c.address) == lower)


async def watched_addresses(
    session: AsyncSession, chain: str, limit: int, *, as_written: bool = False
) -> set[str] | None:
    """Every address (lower-case) a payment of ``chain`` uses, whatever its token or state (a
    transfer to any of them is recorded or reported), when there are at most ``limit``; None
    when there are more. Reads at most ``limit + 1`` distinct entries of ``ix_payments_lookup``
    (:func:`watched_statement`). ``as_written``: the addresses as the gateway wrote them (a
    spelling whose letter case matters, as TRON's base58, cannot be parsed once lower-cased);
    an address stored in more than one letter case has all of its spellings read."""
    rows = list(await session.execute(watched_statement(chain, limit, as_written=as_written)))
    if len(rows) > limit:
        return None
    if not as_written:
        return {row[0] for row in rows}
    found: set[str] = set()
    for lower, least, greatest in rows:
        found.update((least, greatest))
        if least != greatest:  # (rare) more than one spelling
            found.update(r[0] for r in await session.execute(spellings_statement(chain, lower)))
    return found if len(found) <= limit else None


async def native_among(session: AsyncSession, chain: str, addresses: Collection[str]) -> set[str]:
    """The ``addresses`` (lower-case) some native-coin payment of ``chain`` uses."""
    if not addresses:
        return set()
    _, among = native_statements(session, chain, addresses)
    return {r[0] for r in await session.execute(among)}


_UPDATED = ("id", "status", "amount_received", "confirmations", "detected_in_block", "updated_at")


async def update(session: AsyncSession, updates: Sequence[PaymentUpdate]) -> None:
    """Write the plan's outcomes (status, received, confirmations, first block), in bulk."""
    stamp = now()
    rows: list[tuple[object, ...]] = [
        (u.key, u.status, u.amount_received, u.confirmations, u.detected_in_block, stamp)
        for u in updates
    ]
    p = table("payments")
    await bulk.update(session, p, _UPDATED, rows, key=("id",), bump="scanner_rev")
