"""The gateway's ``payments`` rows, parsed one by one where they are read.

Whatever the gateway wrote, one row never stops the others: a row the scanner cannot use (an id
that is no uuid, an amount that is NaN or too precise, an address that is not 20 bytes of hex, a
time it cannot read) raises :class:`RowInvalid`, is reported once (``invalid_payment``) and left
out of every range. Ids are compared as uuids whatever their spelling; every write about a row
binds its id as stored (``RawPayment.key``). A row of a token this chain does not scan (disabled
or unknown) is not followed, and not invalid either.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from uuid import UUID

import msgspec

from scanner.core.amounts import parse_payment_fields
from scanner.core.model import Payment
from scanner.core.plan import Holding
from scanner.db.payments import RawPayment
from scanner.db.types import parse_timestamp
from scanner.scan.context import ChainContext


class RowInvalid(ValueError):
    """A payments row the scanner cannot use; ``key`` is its id as stored."""

    def __init__(self, key: Any, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


class PaymentRow(msgspec.Struct, frozen=True, gc=False):
    """A row whose every column could be read (its amount and address are checked against the
    token by :func:`parse_row`)."""

    key: Any
    id: UUID
    token_id: UUID | None
    address: str
    amount: Decimal
    status: str
    created_at: float
    expires_at: float


def read_row(raw: RawPayment) -> PaymentRow:
    """The row's columns as values; RowInvalid naming the first one that is not readable."""
    return PaymentRow(
        key=raw.key,
        id=_uuid(raw.key, raw.key, "id"),
        token_id=None if raw.token_id is None else _uuid(raw.key, raw.token_id, "token_id"),
        address=_text(raw.key, raw.address, "address"),
        amount=_amount(raw.key, raw.amount),
        status=_text(raw.key, raw.status, "status"),
        created_at=_time(raw.key, raw.created_at, "created_at"),
        expires_at=_time(raw.key, raw.expires_at, "expires_at"),
    )


def followed(row: PaymentRow, ctx: ChainContext) -> bool:
    """Whether the row is of the chain's native coin or of one of its enabled tokens."""
    return row.token_id is None or row.token_id in ctx.token_by_id()


def parse_row(row: PaymentRow, ctx: ChainContext) -> Holding:
    """The core's view of a followed row; RowInvalid when its address or amount is unusable."""
    token = ctx.token_by_id().get(row.token_id) if row.token_id is not None else None
    decimals = token.decimals if token is not None else ctx.native_decimals
    if token is None and ctx.kind.native_reason is not None:
        raise RowInvalid(row.key, ctx.kind.native_reason)
    try:
        parse = ctx.kind.row_parser  # None on EVM: the default, at no cost
        address, amount = parse_payment_fields(row.address, row.amount, decimals, parse)
    except ValueError as exc:
        raise RowInvalid(row.key, str(exc)) from None
    payment = Payment(
        id=row.id,
        token=token.address if token is not None else None,
        address=address,
        amount=amount,
        status=row.status,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )
    token_key = token.key if token is not None else None
    return Holding(payment, row.token_id, decimals, key=row.key, token_key=token_key)


def holdings(rows: Iterable[RawPayment], ctx: ChainContext) -> list[Holding]:
    """The usable, followed rows, each id once (an invalid row is reported by the catch-up).

    A row read again with every column as it was (each value and its type: ``1`` is not
    ``1.0`` nor ``True``) under the same context is not parsed again: a backfill's next commit
    and the live scan's next tick read the same open payments. At most :data:`PARSED_ROWS`
    are kept; a row that cannot be used is parsed every time."""
    out: dict[UUID, Holding] = {}
    parsed = ctx.parsed_rows()
    for raw in rows:
        values = (raw.key, raw.token_id, raw.address, raw.amount, raw.status, raw.created_at,
                  raw.expires_at)  # fmt: skip
        seen: object = (values, tuple(map(type, values)))
        try:
            holding = parsed.get(seen, _UNSEEN)
        except TypeError:  # a value no dict can hold (a driver's list): parsed, not kept
            seen, holding = None, _UNSEEN
        if holding is _UNSEEN:
            try:
                holding = _holding(raw, ctx)
            except RowInvalid:
                continue
            if seen is not None:
                if len(parsed) >= PARSED_ROWS:
                    parsed.clear()
                parsed[seen] = holding
        if holding is not None and holding.payment.id not in out:
            out[holding.payment.id] = holding
    return list(out.values())


#: Parsed payments rows a chain keeps (about 1 KB each), for its next commit or tick.
PARSED_ROWS = 20_000
_UNSEEN: Any = object()


def _holding(raw: RawPayment, ctx: ChainContext) -> Holding | None:
    """The row's holding; None when it is not followed (a token the chain does not scan)."""
    row = read_row(raw)
    return parse_row(row, ctx) if followed(row, ctx) else None


def read_rows(
    rows: Iterable[RawPayment], ctx: ChainContext
) -> tuple[list[PaymentRow], dict[Any, str]]:
    """The followed rows the scanner can use, each with its address as matched (lower-case hex),
    and why each other one is invalid (by key; rows of a token the chain does not scan are
    neither)."""
    usable: list[PaymentRow] = []
    invalid: dict[Any, str] = {}
    for raw in rows:
        try:
            row = read_row(raw)
            if followed(row, ctx):
                holding = parse_row(row, ctx)
                usable.append(msgspec.structs.replace(row, address=holding.payment.address))
        except RowInvalid as exc:
            invalid[raw.key] = exc.reason
    return usable, invalid


def _uuid(key: Any, value: Any, column: str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return _parse_uuid(str(value))
    except ValueError:
        raise RowInvalid(key, f"{column} {str(value)!r:.60} is not a uuid") from None


@lru_cache(maxsize=1024)  # token ids: a few values on every row
def _parse_uuid(text: str) -> UUID:
    return uuid.UUID(text.strip())


def _text(key: Any, value: Any, column: str) -> str:
    if not isinstance(value, str):
        raise RowInvalid(key, f"{column} {value!r:.60} is not text")
    return value


def _amount(key: Any, value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        raise RowInvalid(key, f"amount {value!r} is stored as a float: write it as decimal text")
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise RowInvalid(key, f"amount {str(value)!r:.60} is not a number") from None


def _time(key: Any, value: Any, column: str) -> float:
    try:
        return parse_timestamp(value).timestamp()
    except (ValueError, TypeError, OverflowError, OSError):
        raise RowInvalid(key, f"{column} {str(value)!r:.60} is not a time") from None
