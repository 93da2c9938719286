"""Column types that mean the same on PostgreSQL and SQLite.

=================  ==========================  =====================================  ==========
type               PostgreSQL                  SQLite                                 Python
=================  ==========================  =====================================  ==========
``UUIDType``       ``uuid``                    ``VARCHAR(36)``, lower-case, hyphens   ``UUID``
``ExactDecimal``   ``numeric``                 ``TEXT``, canonical decimal            ``Decimal``
``BaseUnits``      ``numeric(78,0)``           ``TEXT``, canonical integer            ``int``
``UTCDateTime``    ``timestamptz``             ``TEXT``, ``YYYY-MM-DD HH:MM:SS.ffffff``  aware UTC
=================  ==========================  =====================================  ==========

Why text on SQLite: a column declared ``NUMERIC`` has numeric affinity there, and SQLite stores
``1.000000000000000001`` as the 8-byte float ``1.0``. ``TEXT`` affinity keeps the digits. A
gateway writing with plain SQL must quote the amount (``'25.5'``, not ``25.5``): an unquoted
literal is parsed as a float by SQLite before the column sees it.

Timestamps are stored on SQLite in one 26-character form so that they compare correctly as text;
:func:`utcnow` renders the same form as a server default. Values are *read* in any ISO-8601 form
a gateway may have written (``2026-01-01 10:00:00``, ``2026-01-01T10:00:00Z``, ``...+02:00``) and
always come back as timezone-aware UTC datetimes. Only the canonical form compares correctly in
SQL on SQLite, so writers should use it (or the column defaults).
"""

from __future__ import annotations

import operator
import os
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from itertools import repeat
from typing import Any

import orjson
from asyncpg.pgproto.pgproto import UUID as DriverUUID  # type: ignore[import-untyped]
from sqlalchemy import DateTime, Numeric, String, Text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

SQLITE_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"


def _is_postgresql(dialect: Dialect) -> bool:
    return dialect.name == "postgresql"


class StoredKey(str):
    """A gateway's id exactly as SQLite stores it (``'ABCD…'``, ``'{…}'``, ``'order-1001'``).

    Bound verbatim, so that updates find the row and foreign keys match it; a plain ``UUID`` or
    ``str`` is bound in the standard form. (On PostgreSQL the ``uuid`` type has one spelling.)
    """

    __slots__ = ()


class UUIDType(TypeDecorator[uuid.UUID]):
    """``uuid`` on PostgreSQL; the standard lower-case 36-character text elsewhere."""

    impl = String(36)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if _is_postgresql(dialect):
            return dialect.type_descriptor(postgresql.UUID(as_uuid=True))
        return dialect.type_descriptor(String(36))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, StoredKey) and not _is_postgresql(dialect):
            return str(value)
        parsed = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        return parsed if _is_postgresql(dialect) else str(parsed)

    def process_result_value(self, value: Any, dialect: Dialect) -> uuid.UUID | None:
        if value is None or isinstance(value, uuid.UUID):
            return value
        return uuid.UUID(str(value))


def new_ids(count: int) -> list[uuid.UUID]:
    """``count`` random version-4 uuids, as :func:`uuid.uuid4` makes them, made at once (a
    backfill makes one per credit): from one read of the system's random source, each an
    asyncpg ``UUID``, a :class:`uuid.UUID` made in C, which asyncpg sends as it is (a plain
    one it converts first). Bound as any uuid is on SQLite."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])  # the RFC 4122 variant
    whole = bytes(raw)
    return [DriverUUID(whole[i : i + 16]) for i in range(0, 16 * count, 16)]


def to_decimal(value: Any) -> Decimal:
    """A finite Decimal from a Decimal, int or decimal string; floats are refused (inexact)."""
    if isinstance(value, bool | float):
        raise TypeError(f"refusing inexact {type(value).__name__} {value!r}: use Decimal or str")
    try:
        result = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal number: {value!r}") from exc
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return result


def canonical_decimal(value: Decimal) -> str:
    """Plain positional notation, no exponent, no trailing fractional zeros: ``25.5``, ``100``."""
    if value.is_zero():
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


class ExactDecimal(TypeDecorator[Decimal]):
    """An exact amount: ``numeric`` on PostgreSQL, canonical decimal text on SQLite."""

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int | None = None, scale: int | None = None) -> None:
        super().__init__()
        self.precision = precision
        self.scale = scale

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if _is_postgresql(dialect):
            return dialect.type_descriptor(postgresql.NUMERIC(self.precision, self.scale))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        number = to_decimal(value)
        return number if _is_postgresql(dialect) else canonical_decimal(number)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return to_decimal(value)


class BaseUnits(TypeDecorator[int]):
    """An unsigned integer up to 2**256 - 1 (token base units): ``numeric(78,0)`` / text."""

    impl = Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if _is_postgresql(dialect):
            return dialect.type_descriptor(postgresql.NUMERIC(78, 0))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        number = to_decimal(value)
        if number != number.to_integral_value():
            raise ValueError(f"base units must be an integer, not {value!r}")
        integer = int(number)
        return Decimal(integer) if _is_postgresql(dialect) else str(integer)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return int(to_decimal(value))


def parse_timestamp(value: Any) -> datetime:
    """An aware UTC datetime from a datetime, ISO-8601 text, or a number of Unix seconds.

    Text without an offset is UTC; ``Z`` and ``±HH:MM`` offsets are honoured.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    else:
        text = str(value).strip()
        if text and text.replace(".", "", 1).isdigit():  # Unix seconds stored as text (SQLite)
            return datetime.fromtimestamp(float(text), UTC)
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC instant: ``timestamptz`` on PostgreSQL, canonical 26-character text on SQLite.

    Binding a naive datetime is an error: a time without a zone is a bug waiting to happen.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if _is_postgresql(dialect):
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware (UTC) datetime")
        instant = parse_timestamp(value)
        return instant if _is_postgresql(dialect) else instant.strftime(SQLITE_TIMESTAMP_FORMAT)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return parse_timestamp(value)


class utcnow(FunctionElement[datetime]):
    """The current UTC time as SQL: ``now()`` on PostgreSQL, the canonical text on SQLite.

    Usable as a ``server_default``, an ``onupdate`` and in statements.
    """

    type = UTCDateTime()
    inherit_cache = True
    name = "utcnow"


@compiles(utcnow)
def _utcnow_default(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "now()"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return SQLITE_NOW


Convert = Callable[[Any], Any]


def _jsonb_text(value: dict[str, Any], full: Convert) -> Any:
    """JSON text for a ``jsonb`` column (stored parsed: the same value whatever the spacing)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an int beyond 64 bits, a type orjson does not know: the type's own
        return full(value)


#: Per type (as the database has it) and database (PostgreSQL?): the Python type the scanner
#: binds, and what the type's own conversion makes of such a value (``full`` being that
#: conversion, for what it refuses).
_SHORTCUTS: dict[tuple[type, bool], tuple[type, Callable[[Any, Convert], Any]]] = {
    (UUIDType, True): (uuid.UUID, lambda v, full: v),
    (UUIDType, False): (uuid.UUID, lambda v, full: str(v)),
    (BaseUnits, True): (int, lambda v, full: Decimal(v)),
    (BaseUnits, False): (int, lambda v, full: str(v)),
    (ExactDecimal, True): (Decimal, lambda v, full: v if v.is_finite() else full(v)),
    (ExactDecimal, False): (
        Decimal,
        lambda v, full: canonical_decimal(v) if v.is_finite() else full(v),
    ),
    (UTCDateTime, True): (datetime, lambda v, full: v if v.tzinfo is UTC else full(v)),
    (UTCDateTime, False): (
        datetime,
        lambda v, full: v.strftime(SQLITE_TIMESTAMP_FORMAT) if v.tzinfo is UTC else full(v),
    ),
    (postgresql.JSONB, True): (dict, _jsonb_text),
}


def bulk_binder(column_type: TypeEngine[Any], dialect: Dialect) -> Convert | None:
    """The column's bind conversion for many values (``None``: values go as they are): its own,
    with a shortcut for the Python type the scanner binds, which gives the same result without
    SQLAlchemy's layers per value (a bulk write binds hundreds of thousands)."""
    impl = column_type.dialect_impl(dialect)
    full = impl.bind_processor(dialect)
    shortcut = _SHORTCUTS.get((type(impl), _is_postgresql(dialect)))
    if full is None or shortcut is None:
        return full
    kind, quick = shortcut
    slow: Convert = full

    def convert(value: Any) -> Any:
        return quick(value, slow) if value.__class__ is kind else slow(value)

    def convert_any(value: Any) -> Any:
        return quick(value, slow) if isinstance(value, kind) else slow(value)

    # a uuid as the driver reads it (asyncpg's is a subclass) binds as any uuid does; an int
    # subclass must not (a bool is one, and base units refuse it)
    return convert_any if kind is uuid.UUID else convert


ConvertColumn = Callable[[Sequence[Any]], Sequence[Any] | None]


def bulk_column(column_type: TypeEngine[Any], dialect: Dialect) -> ConvertColumn | None:
    """A whole column's conversion at once, for the Python type the scanner binds: the values
    converted (or as they are) when every one is of that type, else None (then each goes
    through :func:`bulk_binder`). A few passes of C over the column instead of a call per
    value; the same result as the binder's. None: the type has no such shortcut."""
    return _COLUMN_SHORTCUTS.get((type(column_type.dialect_impl(dialect)), _is_postgresql(dialect)))


def _uuids(values: Sequence[Any]) -> Sequence[Any] | None:
    """A ``uuid`` column (PostgreSQL) of uuids, the driver's own among them, or None: bound
    as they are."""
    kinds = set(map(type, values)) - {type(None)}
    return values if all(issubclass(kind, uuid.UUID) for kind in kinds) else None


def _uuid_texts(values: Sequence[Any]) -> Sequence[Any] | None:
    """A uuid column (SQLite) of uuids, no None among them: their standard text."""
    kinds = set(map(type, values))
    if not all(issubclass(kind, uuid.UUID) for kind in kinds):
        return None
    return list(map(str, values))


def _utc_instants(values: Sequence[Any]) -> Sequence[Any] | None:
    """A ``timestamptz`` column (PostgreSQL) of datetimes in :data:`~datetime.UTC` itself:
    bound as they are."""
    if set(map(type, values)) != {datetime}:
        return None
    return values if all(map(operator.is_, map(_TZINFO, values), repeat(UTC))) else None


def _finite_decimals(values: Sequence[Any]) -> Sequence[Any] | None:
    """A ``numeric`` amount column (PostgreSQL) of finite Decimals: bound as they are."""
    if set(map(type, values)) != {Decimal}:
        return None
    return values if all(map(Decimal.is_finite, values)) else None


def _whole_numbers(make: Callable[[int], Any]) -> ConvertColumn:
    """A base-units column of ints (never a bool): each made the driver's value by ``make``."""

    def column(values: Sequence[Any]) -> Sequence[Any] | None:
        return list(map(make, values)) if set(map(type, values)) == {int} else None

    return column


_TZINFO = operator.attrgetter("tzinfo")

_COLUMN_SHORTCUTS: dict[tuple[type, bool], ConvertColumn] = {
    (UUIDType, True): _uuids,
    (UUIDType, False): _uuid_texts,
    (BaseUnits, True): _whole_numbers(Decimal),
    (BaseUnits, False): _whole_numbers(str),
    (ExactDecimal, True): _finite_decimals,
    (UTCDateTime, True): _utc_instants,
}
