"""``scan/rows.py``: payments rows as the database driver returns them, parsed into holdings; a
row read again unchanged under the same context is not parsed again, and any change to it is."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from scanner.core.plan import ChainRules
from scanner.db.payments import RawPayment
from scanner.scan import rows
from scanner.scan.context import ChainContext, TokenInfo

TOKEN = TokenInfo(uuid.uuid4(), "0x" + "aa" * 20, "USDT", 6)
CREATED, EXPIRES = "2030-01-01 12:00:00.000000", "2030-01-02 12:00:00.000000"


def _context(decimals: int = 6) -> ChainContext:
    rules = ChainRules(name="ethereum", required=12, tag=None, grace=60, reorg_depth=64)
    token = TokenInfo(TOKEN.id, TOKEN.address, TOKEN.symbol, decimals)
    return ChainContext(rules=rules, native_decimals=18, tokens={token.address: token})


def _raw(n: int, amount: Any = "1.5", status: str = "pending") -> RawPayment:
    key = str(uuid.UUID(int=n + 1))
    address = f"0x{n:040x}"
    return RawPayment(key, str(TOKEN.id), address, amount, status, CREATED, EXPIRES)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The keys of the rows parsed, one entry per parse."""
    seen: list[Any] = []
    read = rows.read_row

    def counted(raw: RawPayment) -> rows.PaymentRow:
        seen.append(raw.key)
        return read(raw)

    monkeypatch.setattr(rows, "read_row", counted)
    return seen


def test_a_row_read_again_unchanged_is_not_parsed_again(parses: list[Any]) -> None:
    ctx = _context()
    first = rows.holdings([_raw(0), _raw(1)], ctx)
    again = rows.holdings([_raw(1), _raw(0)], ctx)
    assert [h.payment.amount for h in first] == [1_500_000, 1_500_000]
    assert {h.payment.id: h for h in again} == {h.payment.id: h for h in first}
    assert len(parses) == 2


def test_any_change_to_a_row_is_parsed_again(parses: list[Any]) -> None:
    ctx = _context()
    (held,) = rows.holdings([_raw(0)], ctx)
    (changed,) = rows.holdings([_raw(0, status="confirming")], ctx)
    assert (held.payment.status, changed.payment.status) == ("pending", "confirming")
    (units,) = rows.holdings([_raw(0, amount=2)], ctx)
    assert units.payment.amount == 2_000_000
    # equal values of another type are another row: a float amount is refused, a bool too
    assert rows.holdings([_raw(0, amount=2.0)], ctx) == []
    assert rows.holdings([_raw(0, amount=Decimal("2"))], ctx)[0].payment.amount == 2_000_000
    assert rows.holdings([_raw(0, amount=1)], ctx)[0].payment.amount == 1_000_000
    assert rows.holdings([_raw(0, amount=True)], ctx) == []
    assert len(parses) == 7


def test_a_row_that_cannot_be_used_is_parsed_every_time(parses: list[Any]) -> None:
    ctx = _context()
    bad, good = _raw(0, amount="NaN"), _raw(1)
    first = rows.holdings([bad, good], ctx)
    again = rows.holdings([bad, good], ctx)
    assert [h.key for h in first] == [h.key for h in again] == [good.key]
    assert parses.count(bad.key) == 2
    assert parses.count(good.key) == 1


def test_another_context_parses_its_rows_itself(parses: list[Any]) -> None:
    (six,) = rows.holdings([_raw(0)], _context(decimals=6))
    (eight,) = rows.holdings([_raw(0)], _context(decimals=8))
    assert (six.payment.amount, eight.payment.amount) == (1_500_000, 150_000_000)
    assert len(parses) == 2


def test_the_rows_kept_are_bounded(monkeypatch: pytest.MonkeyPatch, parses: list[Any]) -> None:
    monkeypatch.setattr(rows, "PARSED_ROWS", 3)
    ctx = _context()
    book = [_raw(n) for n in range(5)]
    assert len(rows.holdings(book, ctx)) == 5
    assert len(ctx.parsed_rows()) <= 3
    assert len(rows.holdings(book, ctx)) == 5  # the ones dropped are parsed again
    assert 5 < len(parses) <= 10


def test_a_value_no_dict_can_hold_is_parsed_and_not_kept(parses: list[Any]) -> None:
    """A driver's list (a column the gateway retyped to an array) cannot key the rows kept: the
    row is parsed each time, refused as any unreadable amount is, and the others go on."""
    ctx = _context()
    odd = _raw(0, amount=[1, 5])
    for _ in range(2):
        assert [h.key for h in rows.holdings([odd, _raw(1)], ctx)] == [_raw(1).key]
    assert parses.count(odd.key) == 2
    assert len(ctx.parsed_rows()) == 1
