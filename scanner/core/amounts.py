"""Token amounts and addresses: exact conversions between base units and whole units, and the
gateway's address spelling. Money is exact: base units are ints, amounts Decimals."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Context, Decimal
from functools import lru_cache
from typing import Final

from scanner.core.model import Event

_AMOUNT_CONTEXT: Final = Context(prec=80)  # wide enough for any uint256 (78 digits)
_MAX_UINT256_DIGITS: Final = 78
#: The most digits, and the largest exponent either way, of an amount the scanner takes as a
#: number. No token amount comes near (a uint256 has 78 digits, decimals are at most 255); past
#: it a gateway's value is never formatted in plain digits: ``1E+999999999`` would be a gigabyte.
AMOUNT_SPAN: Final = 1000


def within_span(amount: Decimal) -> bool:
    """Whether a finite ``amount`` has at most :data:`AMOUNT_SPAN` digits and an exponent within
    ±:data:`AMOUNT_SPAN` (so that its plain form is a few kilobytes at most)."""
    _, digits, exponent = amount.as_tuple()
    return (
        isinstance(exponent, int)
        and len(digits) <= AMOUNT_SPAN
        and -AMOUNT_SPAN <= exponent <= AMOUNT_SPAN
    )


def shown(amount: Decimal) -> str:
    """``amount`` for a message: its own short form, cut to 60 characters."""
    return f"{amount!s:.60}"


@lru_cache(maxsize=8192)  # a range's credits and events repeat their values; pure, and bounded
def to_amount(value: int, decimals: int) -> Decimal:
    """Base units → whole token units, exactly (``Decimal(value).scaleb(-decimals)``, prec 80)."""
    return Decimal(value).scaleb(-decimals, _AMOUNT_CONTEXT)


@lru_cache(maxsize=8192)
def _amount_text(value: int, decimals: int) -> tuple[str, str]:
    """A base-unit value as the outbox writes it: its decimal digits, and its whole units."""
    return str(value), str(to_amount(value, decimals))


def to_base_units(amount: Decimal, decimals: int) -> int:
    """Whole token units → base units, exactly.

    Raises ValueError when ``amount`` is not finite, negative, has more decimal places than
    ``decimals`` (``1.0000001`` of a 6-decimal token), or does not fit a uint256.
    """
    if not amount.is_finite():  # before the cache: a signalling NaN cannot be hashed
        raise ValueError(f"amount {shown(amount)} is not a finite number")
    if not within_span(amount):  # before the cache, and before any digit is converted
        raise ValueError(f"amount {shown(amount)} is out of range")
    return _base_units(amount, decimals)


@lru_cache(maxsize=4096)  # a book repeats its amounts; pure, and bounded
def _base_units(amount: Decimal, decimals: int) -> int:
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite
    coefficient = int("".join(map(str, digits)) or "0")
    if coefficient == 0:
        return 0
    if sign:
        raise ValueError(f"amount {shown(amount)} is negative")
    shift = exponent + decimals
    units: int
    if shift >= 0:
        if len(digits) + shift > _MAX_UINT256_DIGITS:
            raise ValueError(f"amount {shown(amount)} does not fit a uint256")
        scale: int = 10**shift
        units = coefficient * scale
    else:
        if -shift > len(digits):  # a non-zero coefficient below the scale: cannot divide evenly
            raise ValueError(f"amount {shown(amount)} has more than {decimals} decimal places")
        scale = 10**-shift
        units, remainder = divmod(coefficient, scale)
        if remainder:
            raise ValueError(f"amount {shown(amount)} has more than {decimals} decimal places")
    if units >= 2**256:
        raise ValueError(f"amount {shown(amount)} does not fit a uint256")
    return units


@lru_cache(maxsize=65536)  # every range looks at the same addresses again; pure, and bounded
def normalize_address(text: str) -> str | None:
    """``0x`` + 40 hex digits, lower-cased; ``None`` when ``text`` is not a 20-byte address.

    Checksummed and upper-case forms are accepted (the checksum is not verified: the gateway's
    addresses are compared case-insensitively).
    """
    if not isinstance(text, str) or len(text) != 42 or text[:2] not in ("0x", "0X"):
        return None
    body = text[2:]
    if not (body.isascii() and body.isalnum()):
        return None
    try:
        int(body, 16)
    except ValueError:
        return None
    return "0x" + body.lower()


def parse_payment_fields(
    address: str,
    amount: Decimal,
    decimals: int,
    parse_address: Callable[[str], str] | None = None,
) -> tuple[str, int]:
    """A gateway row's address and amount → (lower-case address, base units > 0).

    Raises ValueError with the reason for an ``invalid_payment`` event: an address that is not
    20 bytes of hex (or that ``parse_address``, the chain kind's parser, refuses), an amount
    that is not positive, or one with more decimal places than the token.
    """
    if parse_address is not None:
        normalized: str | None = parse_address(address)
    else:
        normalized = normalize_address(address)
    if normalized is None:
        raise ValueError(f"address {address!r:.60} is not 20 bytes of hex")
    units = to_base_units(amount, decimals)
    if units <= 0:
        raise ValueError(f"amount {shown(amount)} is not positive")
    return normalized, units


def event_data(event: Event, decimals: int) -> dict[str, object]:
    """An event's ``data`` for the outbox: base-unit values as decimal strings, with the amount
    in whole token units beside each (``value`` → ``amount``, ``amount_received`` →
    ``amount_received_decimal``)."""
    data: dict[str, object] = dict(event.data)
    for key, name in (("value", "amount"), ("amount_received", "amount_received_decimal")):
        base = data.get(key)
        if isinstance(base, int) and not isinstance(base, bool):
            data[key], data[name] = _amount_text(base, decimals)
    return data
