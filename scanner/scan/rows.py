"""The gateway's ``payments`` rows, parsed one by one where they are read.

A row the scanner cannot use (a bad address, an amount it cannot hold in base units) is reported
once by the catch-up (``invalid_payment``) and left out of every range; a row of a token this
chain does not scan (disabled, or unknown) is not followed, and not invalid either.
"""

from __future__ import annotations

from collections.abc import Iterable

from scanner.core.amounts import parse_payment_fields
from scanner.core.model import Payment
from scanner.core.plan import Holding
from scanner.db.payments import PaymentRow
from scanner.db.sql import seconds
from scanner.scan.context import ChainContext


def followed(row: PaymentRow, ctx: ChainContext) -> bool:
    """Whether the row is of the chain's native coin or of one of its enabled tokens."""
    return row.token_id is None or row.token_id in ctx.token_by_id()


def parse_row(row: PaymentRow, ctx: ChainContext) -> Holding:
    """The core's view of a followed row; ValueError with the reason when it cannot be used."""
    token = ctx.token_by_id().get(row.token_id) if row.token_id is not None else None
    decimals = token.decimals if token is not None else ctx.native_decimals
    address, amount = parse_payment_fields(row.address, row.amount, decimals)
    payment = Payment(
        id=row.id,
        token=token.address if token is not None else None,
        address=address,
        amount=amount,
        status=row.status,  # type: ignore[arg-type]
        created_at=seconds(row.created_at),
        expires_at=seconds(row.expires_at),
    )
    return Holding(payment, row.token_id, decimals)


def holdings(rows: Iterable[PaymentRow], ctx: ChainContext) -> list[Holding]:
    """The usable, followed rows (an invalid row is reported by the catch-up, not here)."""
    out: list[Holding] = []
    for row in rows:
        if not followed(row, ctx):
            continue
        try:
            out.append(parse_row(row, ctx))
        except ValueError:
            continue
    return out


def invalid_reason(row: PaymentRow, ctx: ChainContext) -> str | None:
    """Why the scanner cannot follow this row, or None (also for rows it does not follow)."""
    if not followed(row, ctx):
        return None
    try:
        parse_row(row, ctx)
    except ValueError as exc:
        return str(exc)
    return None
