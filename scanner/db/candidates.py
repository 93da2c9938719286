"""The candidates of a range's transfers: the payments at its recipients that a transfer can go
to, read without an address's history (issue 8: cost independent of history).

Three statements, each through the index that serves exactly its question, whatever number of
payments an address has had:

- the open ones at the addresses (the partial ``ix_payments_open_lookup``, or
  ``ix_payments_lookup`` where the planner finds it as good: both one probe per address);
- those created in the range's time window (``ix_payments_lookup``: chain, lower(address),
  created_at);
- per address and token, the newest final one created by the window's start (rule 4's fallback:
  older final payments can never be chosen again), ties kept: a backward step in
  ``ix_payments_lookup`` per address and token.

The ``*_statements`` builder is what :func:`by_address` issues; the plan tests EXPLAIN it.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import String, and_, bindparam, func, select, text, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.db.payments import RawPayment, fetch_rows, row_select
from scanner.db.sql import OPEN, compare, in_strings, is_postgres, table

#: literally the WHERE of ``ix_payments_open_lookup`` (SQLite uses a partial index only for a
#: term that proves it)
OPEN_SQL = "payments.status IN ('pending', 'confirming')"

Window = tuple[datetime, datetime]


def address_statements(
    session: AsyncSession,
    chain: str,
    addresses: Collection[str],
    window: Window | None = None,
    tokens: Sequence[object | None] = (None,),
) -> list[Any]:
    """The statements of :func:`by_address`: one without ``window`` (every payment at the
    addresses, ``ix_payments_lookup``), else the three of the module's docstring. ``tokens``:
    the token ids (as stored; None for the native coin) whose newest final payment is looked
    for."""
    p = table("payments")
    at = and_(p.c.chain == chain, in_strings(session, func.lower(p.c.address), addresses))
    if window is None:
        return [row_select().where(at)]
    lo, hi = window
    recent = and_(compare(p.c.created_at, ">=", lo), compare(p.c.created_at, "<=", hi))
    return [
        row_select().where(at, text(OPEN_SQL)),
        row_select().where(at, recent),
        row_select().where(p.c.id.in_(_newest_final(session, chain, addresses, tokens, lo))),
    ]


async def by_address(
    session: AsyncSession,
    chain: str,
    addresses: Collection[str],
    *,
    lock: bool,
    window: Window | None = None,
    tokens: Sequence[object | None] = (None,),
) -> list[RawPayment]:
    """The payments on ``chain`` at ``addresses`` (compared lower-case) that a transfer can go to.

    Without ``window``: every one. With ``window = (lo, hi)`` (the range's first and last block
    times plus the grace): the open ones, and of the final ones only those that can be some
    transfer's newest candidate (rule 4): created in ``[lo, hi]``, or the newest created by
    ``lo`` on each address and token of ``tokens``. Each row once.
    """
    if not addresses:
        return []
    found: dict[Any, RawPayment] = {}
    for stmt in address_statements(session, chain, addresses, window, tokens):
        for row in await fetch_rows(session, stmt, lock):
            found.setdefault(row.key, row)
    return list(found.values())


def _newest_final(
    session: AsyncSession,
    chain: str,
    addresses: Collection[str],
    tokens: Sequence[object | None],
    lo: datetime,
) -> Any:
    """The ids of the newest final payment created by ``lo`` on each address and token (all
    of them when several share that time)."""
    p = table("payments")
    a, t = _addresses(session, addresses), _tokens(session, tokens)
    older, same = p.alias("older"), p.alias("same")

    def on(row: Any) -> Any:
        return and_(
            row.c.chain == chain,
            func.lower(row.c.address) == a.c.value,
            row.c.token_id.is_not_distinct_from(t.c.value),
            row.c.status.not_in(OPEN),
        )

    newest = (
        select(older.c.created_at)
        .where(on(older), compare(older.c.created_at, "<=", lo))
        .order_by(older.c.created_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    pairs = a.join(t, true())
    return select(same.c.id).select_from(
        pairs.join(same, and_(on(same), same.c.created_at == newest))
    )


def _addresses(session: AsyncSession, addresses: Collection[str]) -> Any:
    """The addresses (lower-case) as a one-column table ``value``, one bound parameter."""
    items = sorted({a.lower() for a in addresses})
    if is_postgres(session):
        param = bindparam(None, items, type_=ARRAY(String))
        return func.unnest(param).table_valued("value").render_derived(name="a")
    rows = func.json_each(bindparam(None, orjson.dumps(items).decode(), type_=String))
    return rows.table_valued("value").alias("a")


def _tokens(session: AsyncSession, tokens: Sequence[object | None]) -> Any:
    """The token ids (as stored; None: the native coin) as a one-column table ``value``."""
    if is_postgres(session):
        ids = [
            None if k is None else k if isinstance(k, uuid.UUID) else uuid.UUID(str(k))
            for k in tokens
        ]
        param = bindparam(None, ids, type_=ARRAY(PG_UUID(as_uuid=True)))
        return func.unnest(param).table_valued("value").render_derived(name="t")
    items = [None if k is None else str(k) for k in tokens]
    rows = func.json_each(bindparam(None, orjson.dumps(items).decode(), type_=String))
    return rows.table_valued("value").alias("t")
