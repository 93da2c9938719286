"""The gateway edits its payments while the scanner runs (plain SQL, as a gateway would): each
edit is followed at the next tick, the payment recomputed from its credits under its new row."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from scanner.scan import catchup
from scanner.testkit.settings import CHAIN
from tests.e2e.actions import pay
from tests.e2e.gateway import edit, iso
from tests.e2e.harness import Harness

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20


def _utc(h: Harness, unix: float) -> str:
    return iso(unix) + ("+00:00" if h.engine.dialect.name == "postgresql" else "")


async def test_switched_token_leaves_the_old_credit_uncounted(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "5")
    pay(h, ALICE, 5_000_000)  # USDT
    await h.scan()
    assert (await h.payment(pid))["status"] == "confirming"
    await edit(h, pid, token_id=await h.token_id(h.token18))  # now it wants DAI
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("0"))
    assert len(await h.transactions(pid)) == 1  # the USDT transfer stays recorded
    assert (await h.events(pid))[-2:] == [
        ("transfer_unmatched", None, None),
        ("status_changed", "confirming", "pending"),
    ]
    pay(h, ALICE, 5 * 10**18, token=h.token18)
    h.mine(3)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("5"))


async def test_lowered_amount_confirms_once_the_credits_are_final(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "10")
    pay(h, ALICE, 4_000_000)
    h.mine(3)
    await h.scan()
    assert (await h.payment(pid))["status"] == "pending"
    await edit(h, pid, amount="4")
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("4"))
    assert (await h.events(pid))[-2:] == [
        ("status_changed", "pending", "confirming"),
        ("status_changed", "confirming", "confirmed"),
    ]


async def test_extended_expiry_counts_a_late_credit(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "5", expires_in=600)
    h.chain.increase_time(3600)
    h.mine(3)
    await h.scan()
    assert (await h.payment(pid))["status"] == "expired"
    pay(h, ALICE, 5_000_000)  # late
    await h.scan()
    (late,) = await h.transactions(pid)
    assert late["late"]
    await edit(h, pid, expires_at=_utc(h, h.now() + 7200))
    h.mine(3)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("5"))
    (counted,) = await h.transactions(pid)
    assert not counted["late"]
    assert (await h.events(pid))[-3:] == [
        ("status_changed", "expired", "pending"),
        ("status_changed", "pending", "confirming"),
        ("status_changed", "confirming", "confirmed"),
    ]


async def test_reopened_payment_is_followed_again(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "5", expires_in=600)
    h.chain.increase_time(3600)
    h.mine(3)
    await h.scan()
    assert (await h.payment(pid))["status"] == "expired"
    await edit(h, pid, status="pending", expires_at=_utc(h, h.now() + 7200))
    await h.scan()
    assert (await h.payment(pid))["status"] == "pending"  # not expired again
    pay(h, ALICE, 5_000_000)
    h.mine(3)
    await h.scan()
    assert (await h.payment(pid))["status"] == "confirmed"


async def test_a_payment_cancelled_by_the_gateway_stays_cancelled(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "5")
    await h.scan()
    await edit(h, pid, status="cancelled")
    pay(h, ALICE, 5_000_000)
    h.mine(3)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("cancelled", Decimal("5"))
    assert [e[0] for e in await h.events(pid)] == ["transfer_detected"]


async def test_created_at_ahead_is_unmatched_then_credited_once_fixed(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "5", created_at=h.now() + 3600)  # clock skew
    with capture_logs() as logs:
        paid = pay(h, ALICE, 5_000_000)
        await h.scan()
    unmatched = [e for e in logs if e["event"] == "transfer_unmatched"]
    assert [(e["tx_hash"], e["address"], e["value"]) for e in unmatched] == [
        (paid, ALICE, "5000000")
    ]
    assert (
        h.metrics.registry.get_sample_value("scanner_transfers_unmatched_total", {"chain": CHAIN})
        == 1.0
    )
    assert await h.transactions(pid) == []
    await edit(h, pid, created_at=_utc(h, h.now() - 600))  # the gateway fixes its clock
    h.mine(3)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("5"))
    assert [t["tx_hash"] for t in await h.transactions(pid)] == [paid]


async def test_edits_of_other_payments_leave_the_rest_alone(h: Harness) -> None:
    edited = await h.create_payment(ALICE, "10")
    other = await h.create_payment(BOB, "5")
    pay(h, BOB, 5_000_000)
    h.mine(3)
    await h.scan()
    before = await h.events(other)
    await edit(h, edited, amount="9")
    await h.scan()
    assert await h.events(other) == before
    assert await h.events(edited) == []
    assert (await h.payment(edited))["amount"] == Decimal("9")


async def test_a_transactions_row_edited_into_nonsense_leaves_its_payment_alone(
    h: Harness,
) -> None:
    broken = await h.create_payment(ALICE, "10")
    good = await h.create_payment(BOB, "5")
    pay(h, ALICE, 4_000_000)
    await h.scan()
    async with h.engine.begin() as conn:
        await conn.execute(text("UPDATE transactions SET value = 'NaN'"))
    with capture_logs() as logs:
        pay(h, BOB, 5_000_000)
        pay(h, ALICE, 6_000_000)
        h.mine(3)
        await h.scan()
    assert [e["payment_id"] for e in logs if e["event"] == "transaction_invalid"][:1] == [broken]
    assert (await h.payment(good))["status"] == "confirmed"
    row = await h.payment(broken)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("4"))  # untouched
    async with h.engine.begin() as conn:  # the row is fixed: what it missed is looked back for
        await conn.execute(text("UPDATE transactions SET value = '4000000'"))
    await h.scan()
    await h.scan()
    row = await h.payment(broken)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("10"))


async def test_a_page_holding_a_payment_left_alone_ends_no_look_early(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The look goes page after page; a page whose payment it leaves alone (a credit row
    unreadable) is a page like any other: the payments on the pages after it are looked back
    for in the same pass, not a tick later."""
    monkeypatch.setattr(catchup, "LEFT_ALONE_RETRY", 0.0)  # looked back for on every pass
    broken = await h.create_payment(ALICE, "10")
    pay(h, ALICE, 4_000_000)
    await h.scan()
    async with h.engine.begin() as conn:
        await conn.execute(text("UPDATE transactions SET value = 'NaN'"))
    pay(h, ALICE, 6_000_000)
    h.mine(3)
    await h.scan()  # the range leaves it alone: unseen, first on the look's pages
    assert h.scanner is not None
    h.scanner.catch_up_page = 1
    others = [await h.create_payment("0x" + f"{n:02x}" * 20, "1") for n in (0xB3, 0xC4, 0xD5)]
    h.mine(1)
    await h.scan()
    await h.scanner.book_looked_at()  # one pass, a row a page
    async with h.engine.connect() as conn:
        rows = await conn.execute(text("SELECT CAST(id AS TEXT), seen_at_block FROM payments"))
        seen = {pid: block for pid, block in rows}
    assert seen[broken] is None
    assert all(seen[pid] is not None for pid in others), seen


async def test_a_payment_left_alone_is_looked_back_for_again_later_not_on_every_pass(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one of its credit rows stays unreadable, the payment stays unseen (looked back for
    again until the row is fixed), but its address's logs are read again only
    ``LEFT_ALONE_RETRY`` seconds later, not on every tick meanwhile."""
    looked: list[set[str]] = []
    real = catchup._look_back

    async def spy(reader: Any, ctx: Any, rows: Any, *args: Any, **kw: Any) -> Any:
        looked.append({str(r.key) for r in rows})
        return await real(reader, ctx, rows, *args, **kw)

    monkeypatch.setattr(catchup, "_look_back", spy)
    broken = await h.create_payment(ALICE, "10")
    pay(h, ALICE, 4_000_000)
    await h.scan()
    async with h.engine.begin() as conn:
        await conn.execute(text("UPDATE transactions SET value = 'NaN'"))
    pay(h, ALICE, 6_000_000)  # not credited while its payment is left alone
    h.mine(3)
    await h.scan()  # the range leaves it alone: looked back for at the next tick
    h.mine(1)
    await h.scan()
    times = sum(broken in rows for rows in looked)
    assert times == 2  # when it was written, and once left alone
    for _ in range(3):
        h.mine(1)
        await h.scan()
    assert sum(broken in rows for rows in looked) == times
    async with h.engine.connect() as conn:
        seen = text("SELECT seen_at_block FROM payments WHERE id = :id")
        assert (await conn.execute(seen, {"id": broken})).scalar_one() is None
    row = await h.payment(broken)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("4"))
