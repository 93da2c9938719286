"""``payment_sums`` against a real node and both databases: the running totals the scanner reads
instead of a payment's final credits are what its ``transactions`` rows add up to and read back
as written, a total that does not add up is never trusted, a row the gateway copies (no totals)
or a payment credited before the table existed is read in full, and what a range reads of a
payment's credits does not grow with the payment's final history.

"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, text
from structlog.testing import capture_logs

from scanner.core.states import Settled
from scanner.db import sums
from scanner.scan import load
from scanner.testkit.gateway import db_id
from tests.e2e.actions import pay
from tests.e2e.gateway import edit, same_id, sql_literal
from tests.e2e.harness import Harness, stored_cursor

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
USDT = 10**6  # base units of the 6-decimal token
REQUIRED = 3  # the scenario chain's confirmations


# --- reading what the scanner stored ----------------------------------------------------------


async def sums_row(h: Harness, payment_id: Any) -> tuple[int, int, int | None, int | None] | None:
    """The payment's ``payment_sums`` row (value in base units, credits, first, last block)."""
    async with h.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT counted_value, counted_credits, first_block, last_block"
                    f" FROM payment_sums WHERE {same_id(h, 'payment_id', payment_id)}"
                )
            )
        ).one_or_none()
    if row is None:
        return None
    first, last = (None if b is None else int(b) for b in row[2:4])
    return int(Decimal(str(row[0]))), int(row[1]), first, last


async def counted(h: Harness, payment_id: str) -> list[dict[str, Any]]:
    """The payment's counted ``transactions`` rows: neither orphaned nor late."""
    return [
        t for t in await h.transactions(payment_id) if t["status"] != "orphaned" and not t["late"]
    ]


async def check(h: Harness, payment_id: str, paid: list[int], status: str, amount: int) -> None:
    """The payment's ``payment_sums`` row is the sum, count, first and last block of its counted
    ``transactions`` rows, which are the ``paid`` transfers; and its ``payments`` row is what
    those transfers and the cursor make of it."""
    rows = await counted(h, payment_id)
    assert sorted(t["value"] for t in rows) == sorted(paid)
    blocks = [int(t["block_number"]) for t in rows]
    assert await sums_row(h, payment_id) == (
        sum(paid),
        len(paid),
        min(blocks, default=None),
        max(blocks, default=None),
    )
    cursor = await stored_cursor(h)
    row = await h.payment(payment_id)
    assert row["amount_received"] == Decimal(sum(paid)) / USDT
    assert row["confirmations"] == min(min(cursor - b + 1, REQUIRED) for b in blocks)
    assert row["detected_in_block"] == min(blocks)
    final = all(b <= cursor - REQUIRED + 1 for b in blocks)
    expected = "pending" if sum(paid) < amount else ("confirmed" if final else "confirming")
    assert row["status"] == expected == status


@contextmanager
def settled_loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[Settled]]]:
    """What each range took from ``payment_sums`` for a payment instead of its final credits
    (``load._credits``'s settled totals), by payment id as text."""
    seen: dict[str, list[Settled]] = {}
    real = load._credits

    async def spy(*args: Any, **kwargs: Any) -> Any:
        found, settled, broken = await real(*args, **kwargs)
        for key, total in settled.items():
            seen.setdefault(str(key), []).append(total)
        return found, settled, broken

    monkeypatch.setattr(load, "_credits", spy)
    yield seen


async def tamper(h: Harness, payment_id: str, more: int) -> None:
    """What no scanner write does: the stored total says ``more`` base units more."""
    async with h.engine.begin() as conn:
        await conn.execute(
            text(
                f"UPDATE payment_sums SET counted_value = counted_value + {more}"
                f" WHERE {same_id(h, 'payment_id', payment_id)}"
            )
        )


def mismatches(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    return [p for e in logs if e["event"] == "payment_sums_mismatch" for p in e["payments"]]


# --- (a) the running totals over several scans --------------------------------------------------


async def test_running_totals_are_what_the_counted_transactions_add_up_to(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = await h.create_payment(ALICE, "100")
    other = await h.create_payment(BOB, "5")  # another payment's credits stay its own
    paid: list[int] = []
    with settled_loads(monkeypatch) as settled, capture_logs() as logs:
        for value in (3, 4):
            pay(h, ALICE, value * USDT)
            paid.append(value * USDT)
        pay(h, BOB, 2 * USDT)
        await h.scan()
        await check(h, pid, paid, "pending", 100 * USDT)
        h.mine(REQUIRED)  # 3 and 4 final
        await h.scan()
        await check(h, pid, paid, "pending", 100 * USDT)
        pay(h, ALICE, 5 * USDT)  # read beside the stored totals of 3 and 4
        paid.append(5 * USDT)
        await h.scan()
        await check(h, pid, paid, "pending", 100 * USDT)
        pay(h, ALICE, 6 * USDT)
        paid.append(6 * USDT)
        h.mine(1)  # 5 final, 6 not yet
        await h.scan()
        await check(h, pid, paid, "pending", 100 * USDT)
        pay(h, ALICE, 10 * USDT)
        paid.append(10 * USDT)
        await h.scan()
        await check(h, pid, paid, "pending", 100 * USDT)
        pay(h, ALICE, 72 * USDT)  # 100 in all: confirming until the last one is final
        paid.append(72 * USDT)
        await h.scan()
        await check(h, pid, paid, "confirming", 100 * USDT)
        h.mine(REQUIRED - 2)
        await h.scan()
        await check(h, pid, paid, "confirming", 100 * USDT)
        h.mine(1)
        await h.scan()
        await check(h, pid, paid, "confirmed", 100 * USDT)
        pay(h, ALICE, 1 * USDT)  # an overpayment of the confirmed payment: counted too
        paid.append(1 * USDT)
        h.mine(REQUIRED)
        await h.scan()
        await check(h, pid, paid, "confirmed", 100 * USDT)
    await check(h, other, [2 * USDT], "pending", 5 * USDT)
    assert mismatches(logs) == []
    assert [e for e in logs if e["event"] == "payment_sums_invalid"] == []
    # the ranges after the first final credits did read this payment beside its stored totals
    assert {s.value for s in settled[pid]} >= {3 * USDT, 7 * USDT, 12 * USDT}
    assert max(s.credits for s in settled[pid]) >= 5
    assert (await h.payment(pid))["amount_received"] == Decimal(101)


async def test_stored_totals_read_back_as_written(h: Harness) -> None:
    """What ``sums.totals_of`` reads is what the scanner wrote: round base-unit values too
    (PostgreSQL's numeric comes back as ``Decimal('4.00E+6')``)."""
    pid = await h.create_payment(ALICE, "10")
    pay(h, ALICE, 4 * USDT)
    await h.scan()
    stored = await sums_row(h, pid)
    assert stored is not None and stored[:2] == (4 * USDT, 1)
    key = db_id(h.engine, pid)
    with capture_logs() as logs:
        async with h.sessions() as session:
            totals = await sums.totals_of(session, [key])
    assert [e for e in logs if e["event"] == "payment_sums_invalid"] == []
    assert {str(k): v.total for k, v in totals.items()} == {pid: Settled(*stored)}
    token = uuid.UUID(str(await h.token_id(h.token)))
    assert [v.of(token) for v in totals.values()] == [True]


# --- (b) stored totals that do not add up are never trusted --------------------------------------


async def test_a_tampered_total_of_unfinal_credits_is_read_in_full(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "10")
    pay(h, ALICE, 4 * USDT)
    await h.scan()
    await check(h, pid, [4 * USDT], "pending", 10 * USDT)
    await tamper(h, pid, 1)  # UPDATE payment_sums SET counted_value = counted_value + 1
    with capture_logs() as logs:
        h.mine(1)
        await h.scan()
    assert mismatches(logs) == [pid]
    await check(h, pid, [4 * USDT], "pending", 10 * USDT)  # rewritten from the credits
    await tamper(h, pid, 6 * USDT)  # trusted, it would confirm 4 of 10
    with capture_logs() as logs:
        h.mine(REQUIRED)
        await h.scan()
    assert mismatches(logs) == [pid]
    await check(h, pid, [4 * USDT], "pending", 10 * USDT)
    assert [e for e in await h.events(pid) if e[0] == "status_changed"] == []
    pay(h, ALICE, 6 * USDT)  # the money arrives: confirmed on it
    h.mine(REQUIRED)
    await h.scan()
    await check(h, pid, [4 * USDT, 6 * USDT], "confirmed", 10 * USDT)


async def test_a_tampered_total_of_final_credits_is_never_trusted(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "10")
    pay(h, ALICE, 4 * USDT)
    h.mine(REQUIRED)
    await h.scan()
    await check(h, pid, [4 * USDT], "pending", 10 * USDT)  # the 4 are final
    await tamper(h, pid, 6 * USDT)  # trusted, it would confirm 5 of 10
    with capture_logs() as logs:
        pay(h, ALICE, 1 * USDT)  # a range that reads this payment
        h.mine(REQUIRED)
        await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal(5))
    assert mismatches(logs) == [pid]
    await check(h, pid, [4 * USDT, 1 * USDT], "pending", 10 * USDT)


# --- (c) a row the gateway copies has no totals ---------------------------------------------------

COPIED = (
    "token_id, chain, address, amount, amount_received, status, confirmations,"
    " detected_in_block, seen_at_block, edited, scanner_rev, expires_at, created_at"
)


async def copy_payment(h: Harness, payment_id: str) -> str:
    """The gateway copies a payment's row, every column but the id (INSERT ... SELECT)."""
    new = str(uuid.uuid4())
    value = sql_literal(new)
    if h.engine.dialect.name == "postgresql":
        value = f"CAST({value} AS uuid)"
    async with h.engine.begin() as conn:
        await conn.execute(
            text(
                f"INSERT INTO payments (id, {COPIED}) SELECT {value}, {COPIED}"
                f" FROM payments WHERE {same_id(h, 'id', payment_id)}"
            )
        )
    return new


async def test_a_copied_row_is_read_in_full(h: Harness) -> None:
    original = await h.create_payment(ALICE, "10")
    pay(h, ALICE, 4 * USDT)
    h.mine(REQUIRED)
    await h.scan()
    await check(h, original, [4 * USDT], "pending", 10 * USDT)
    copy = await copy_payment(h, original)
    assert await sums_row(h, copy) is None
    assert (await h.payment(copy))["amount_received"] == Decimal(4)  # copied, not its own
    with capture_logs() as logs:
        pay(h, ALICE, 10 * USDT)  # the copy is owed exactly 10 (rule 1), the original 6
        await h.scan()
    await check(h, copy, [10 * USDT], "confirming", 10 * USDT)
    await check(h, original, [4 * USDT], "pending", 10 * USDT)
    with capture_logs() as more:
        pay(h, ALICE, 6 * USDT)  # now the original's 6 (rule 1), beside its stored total
        h.mine(REQUIRED)
        await h.scan()
    await check(h, copy, [10 * USDT], "confirmed", 10 * USDT)
    await check(h, original, [4 * USDT, 6 * USDT], "confirmed", 10 * USDT)
    assert mismatches(logs + more) == []
    assert [t["payment_id"] for t in await h.transactions()].count(copy) == 1


async def test_a_payment_without_totals_is_read_in_full_and_gets_them(h: Harness) -> None:
    """As one credited before ``payment_sums`` existed: its final credits still count."""
    pid = await h.create_payment(ALICE, "10")
    pay(h, ALICE, 4 * USDT)
    h.mine(REQUIRED)
    await h.scan()
    async with h.engine.begin() as conn:
        await conn.execute(text(f"DELETE FROM payment_sums WHERE {same_id(h, 'payment_id', pid)}"))
    with capture_logs() as logs:
        pay(h, ALICE, 6 * USDT)
        await h.scan()
    await check(h, pid, [4 * USDT, 6 * USDT], "confirming", 10 * USDT)
    h.mine(REQUIRED)
    await h.scan()
    await check(h, pid, [4 * USDT, 6 * USDT], "confirmed", 10 * USDT)
    assert mismatches(logs) == []


async def test_a_switched_token_is_not_paid_by_the_old_tokens_totals(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = await h.create_payment(ALICE, "10", token=h.token18)  # 10 DAI
    pay(h, ALICE, 4 * 10**18, token=h.token18)
    h.mine(REQUIRED)
    await h.scan()
    assert await sums_row(h, pid) is not None  # 4 DAI, in DAI base units
    await edit(h, pid, token_id=await h.token_id(h.token))  # now it wants 10 USDT
    assert h.scanner is not None

    async def not_yet(cursor: int, tag: Any) -> None:
        """The edit lands after this tick's follow step (or beyond its page of edits)."""

    monkeypatch.setattr(h.scanner, "_follow_edits", not_yet)
    pay(h, ALICE, 1)  # one base unit of USDT
    h.mine(REQUIRED)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("0.000001"))
    monkeypatch.undo()
    await h.scan()  # the edit followed
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("0.000001"))


async def test_a_credit_edited_to_zero_does_not_stop_the_chain(h: Harness) -> None:
    zero = await h.create_payment(ALICE, "10")
    good = await h.create_payment(BOB, "5")
    pay(h, ALICE, 4 * USDT)
    await h.scan()
    async with h.engine.begin() as conn:  # a row edited by hand: a whole number, though 0
        await conn.execute(
            text(f"UPDATE transactions SET value = '0' WHERE {same_id(h, 'payment_id', zero)}")
        )
    pay(h, BOB, 5 * USDT)
    h.mine(REQUIRED)
    await h.scan()
    assert (await h.payment(good))["status"] == "confirmed"


# --- (d) what a range reads does not grow with a payment's final history ----------------------


def _rows_of(cursor: Any) -> int:
    """Rows a SELECT returned: the async adapters of both drivers buffer them whole on
    execute (``_rows``); without it this test cannot count, and says so."""
    rows = getattr(cursor, "_rows", None)
    assert rows is not None, f"cannot count the rows of {type(cursor).__name__}"
    return len(rows)


@contextmanager
def transactions_reads(h: Harness) -> Iterator[dict[str, list[int]]]:
    """Rows returned by each SELECT that reads ``transactions`` ("credits": the credit loads,
    those selecting ``verified_hash``; "all": every one)."""
    reads: dict[str, list[int]] = {"credits": [], "all": []}

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        flat = " ".join(statement.split()).lower()
        if not flat.startswith("select") or "from transactions" not in flat:
            return
        n = _rows_of(cursor)
        reads["all"].append(n)
        if "transactions.verified_hash" in flat:
            reads["credits"].append(n)

    event.listen(h.engine.sync_engine, "after_cursor_execute", after)
    try:
        yield reads
    finally:
        event.remove(h.engine.sync_engine, "after_cursor_execute", after)


async def measured_scan(h: Harness, pid: str, paid: list[int]) -> dict[str, list[int]]:
    """A scan whose one range holds a new transfer to ``pid``: what it read of transactions."""
    pay(h, ALICE, 1 * USDT)
    paid.append(1 * USDT)
    with transactions_reads(h) as reads:
        await h.scan()
    await check(h, pid, paid, "pending", 1000 * USDT)
    h.mine(REQUIRED)  # the measured credit final too, before the history grows
    await h.scan()
    return reads


async def test_a_range_reads_no_more_credits_after_a_longer_final_history(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "1000")
    paid: list[int] = []
    for _ in range(3):
        pay(h, ALICE, 1 * USDT)
        paid.append(1 * USDT)
    h.mine(REQUIRED)
    await h.scan()
    await check(h, pid, paid, "pending", 1000 * USDT)
    short = await measured_scan(h, pid, paid)
    for _ in range(27):
        pay(h, ALICE, 1 * USDT)
        paid.append(1 * USDT)
    h.mine(REQUIRED)
    await h.scan()
    assert len(await counted(h, pid)) == 31
    long = await measured_scan(h, pid, paid)
    assert short["credits"], "the measured scan loaded the payment's credits"
    assert long["credits"] == short["credits"]
    assert sum(long["all"]) == sum(short["all"])
    assert sum(long["credits"]) < 3  # not the history: its not-yet-final credits at most
    assert (await sums_row(h, pid) or ())[:2] == (32 * USDT, 32)
