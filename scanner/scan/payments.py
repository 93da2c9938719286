"""Loading the payments a range touches into a :class:`Ledger`, in a constant number of queries.

Three kinds of payment matter to a range: those at the addresses its transfers pay (candidates),
those holding transactions in blocks the node no longer shows (to orphan), and the open ones whose
confirmations or expiry move with the checked block. Each kind is one query, whatever the number of
payments; their transactions are one more.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from scanner.core.decode import parse_payment_fields
from scanner.core.ledger import Ledger
from scanner.core.model import Finality, Payment, Transfer
from scanner.db import queries as q
from scanner.scan.context import ChainContext


@dataclass(slots=True)
class LoadedPayments:
    ledger: Ledger
    by_address: dict[str, list[q.PaymentRow]]
    token_of: dict[UUID, UUID | None]
    token_address_of: dict[UUID | None, str | None]

    def candidates(self, transfer: Transfer) -> list[UUID]:
        """Payments on the transfer's address and token (the ledger applies the rule order)."""
        rows = self.by_address.get(transfer.to_address, ())
        return [
            row.id for row in rows if self.token_address_of.get(row.token_id, "?") == transfer.token
        ]


def to_core(row: q.PaymentRow, token: str | None, decimals: int) -> Payment | None:
    """The core's view of a row; None when the row is invalid (reported elsewhere)."""
    try:
        address, amount = parse_payment_fields(row.address, row.amount, decimals)
    except ValueError:
        return None
    return Payment(
        id=row.id,
        token=token,
        address=address,
        amount=amount,
        status=row.status,  # type: ignore[arg-type]
        created_at=_ts(row.created_at),
        expires_at=_ts(row.expires_at),
    )


def _ts(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


async def payment_rows(
    session: AsyncSession,
    ctx: ChainContext,
    *,
    recipients: set[str],
    extra_ids: set[UUID],
    finality: Finality,
    lock: bool,
    window: tuple[float, float] | None = None,
) -> dict[UUID, q.PaymentRow]:
    """The rows a batch may touch: candidates at ``recipients`` (within the block-time
    ``window`` when given), ``extra_ids``, and the open payments that the checked block moves."""
    rows: dict[UUID, q.PaymentRow] = {}
    if recipients:
        moments = None
        if window is not None:
            lo, hi = window
            moments = (_moment(lo + ctx.grace), _moment(hi + ctx.grace))
        found = await q.payments_by_address(
            session, ctx.name, recipients, lock=lock, window=moments
        )
        rows.update((row.id, row) for row in found)
    await add_rows(session, rows, extra_ids, lock=lock)
    expiry = _expiry_cutoff(finality)
    for row in await q.payments_to_advance(session, ctx.name, expiry, lock=lock):
        rows.setdefault(row.id, row)
    return rows


async def add_rows(
    session: AsyncSession, rows: dict[UUID, q.PaymentRow], ids: set[UUID], *, lock: bool
) -> None:
    missing = ids - rows.keys()
    if missing:
        rows.update((row.id, row) for row in await q.payments_by_id(session, missing, lock=lock))


async def build_ledger(
    session: AsyncSession, ctx: ChainContext, rows: dict[UUID, q.PaymentRow]
) -> LoadedPayments:
    """A Ledger over ``rows`` (those of this chain's enabled tokens) and all their credits."""
    token_ids = ctx.token_by_id()
    rows = {
        pid: row for pid, row in rows.items() if row.token_id is None or row.token_id in token_ids
    }
    payments, by_address = _core_payments(ctx, rows.values())
    credits = await q.credits_of(session, [p.id for p in payments])
    ledger = Ledger(payments, credits, ctx.grace)
    token_address_of: dict[UUID | None, str | None] = {t.id: t.address for t in ctx.tokens.values()}
    token_address_of[None] = None
    return LoadedPayments(
        ledger=ledger,
        by_address=by_address,
        token_of={pid: row.token_id for pid, row in rows.items()},
        token_address_of=token_address_of,
    )


async def load_into_ledger(
    session: AsyncSession, ctx: ChainContext, *, ids: set[UUID], finality: Finality
) -> LoadedPayments:
    """A Ledger over ``ids`` and the open payments the checked block moves, rows locked."""
    rows = await payment_rows(
        session, ctx, recipients=set(), extra_ids=ids, finality=finality, lock=True
    )
    return await build_ledger(session, ctx, rows)


def _moment(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, tz=UTC)


def addresses_of(rows: dict[UUID, q.PaymentRow]) -> set[str]:
    return {row.address.lower() for row in rows.values()}


def _expiry_cutoff(finality: Finality) -> datetime | None:
    if finality.final_timestamp is None:
        return None
    return datetime.fromtimestamp(finality.final_timestamp, tz=UTC)


def _core_payments(
    ctx: ChainContext, rows: Iterable[q.PaymentRow]
) -> tuple[list[Payment], dict[str, list[q.PaymentRow]]]:
    payments: list[Payment] = []
    by_address: dict[str, list[q.PaymentRow]] = defaultdict(list)
    by_id = ctx.token_by_id()
    for row in rows:
        token = by_id.get(row.token_id) if row.token_id is not None else None
        decimals = token.decimals if token is not None else ctx.native_decimals
        payment = to_core(row, token.address if token is not None else None, decimals)
        if payment is None:
            continue
        payments.append(payment)
        by_address[payment.address].append(row)
    return payments, dict(by_address)
