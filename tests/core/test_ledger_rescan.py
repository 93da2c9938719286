"""A rescanned transfer (the catch-up reads it again) and payments its first match could not see.

A gateway that reuses a deposit address and commits a new payment slowly lets the scanner see the
customer's transfer before the payment: it goes, late, to the expired payment on that address
(rule 4: funds are never dropped). When the catch-up reads it again with the new payment loaded,
the rules give it to the new payment: a late credit moves; a counted one never does.
"""

from __future__ import annotations

from scanner.core.ledger import Ledger
from scanner.core.model import Credit, PaymentOutcome, Transfer
from tests.core.builders import GRACE, payment, pid, transfer, ts

P1, P2 = pid(1), pid(2)


def stored(t: Transfer, *, late: bool) -> Credit:
    return Credit(
        tx_hash=t.tx_hash,
        log_index=t.log_index,
        block_number=t.block_number,
        block_hash=t.block_hash,
        block_timestamp=t.block_timestamp,
        value=t.value,
        late=late,
        orphaned=False,
    )


def test_a_late_credit_moves_to_the_payment_written_behind_the_cursor() -> None:
    t = transfer(1, 10, 5)
    expired = payment(1, 5, created=ts(1), expires=ts(3), status="expired")
    new = payment(2, 5, created=ts(9), expires=ts(50))
    ledger = Ledger([expired, new], {P1: [stored(t, late=True)]}, GRACE)
    credited = ledger.apply(t, [P1, P2])
    assert credited is not None and not credited.late
    assert ledger.credits()[t.key] == (P2, credited)
    assert ledger.payment_credits(P1) == []
    assert ledger.outcome(P1) == PaymentOutcome("expired", 0, 0, None)
    assert ledger.outcome(P2).status == "confirming"
    assert [(e.payment_id, e.type) for e in ledger.events()] == [
        (P1, "transfer_orphaned"),
        (P2, "transfer_detected"),
        (P2, "status_changed"),
    ]
    assert ledger.apply(t, [P1, P2]) is None  # and there it stays


def test_a_late_credit_stays_when_no_open_payment_is_in_time() -> None:
    t = transfer(1, 10, 5)
    expired = payment(1, 5, created=ts(1), expires=ts(3), status="expired")
    confirmed = payment(2, 5, created=ts(2), expires=ts(50), status="confirmed")
    ledger = Ledger([expired, confirmed], {P1: [stored(t, late=True)]}, GRACE)
    assert ledger.apply(t, [P1, P2]) is None
    assert ledger.events() == []


def test_a_counted_credit_never_moves() -> None:
    t = transfer(1, 10, 3)
    older = payment(1, 5, created=ts(1), status="pending")  # took 3 of 5 by rule 2
    exact = payment(2, 3, created=ts(2))  # would have taken it by rule 1
    ledger = Ledger([older, exact], {P1: [stored(t, late=False)]}, GRACE)
    assert ledger.apply(t, [P1, P2]) is None
    assert ledger.events() == []


def test_a_late_credit_its_own_payment_now_takes_in_time_is_re_timed_where_it_stands() -> None:
    """The gateway reopened the payment with a later expiry: a rescan (a backfill reading the
    same block) re-times the credit as following the edit does, never an orphaning that no
    reorg explains."""
    t = transfer(1, 10, 5)
    reopened = payment(1, 5, created=ts(1), expires=ts(50))  # expired at ts(3) before the edit
    ledger = Ledger([reopened], {P1: [stored(t, late=True)]}, GRACE)
    credited = ledger.apply(t, [P1])
    assert credited is not None and not credited.late
    assert ledger.credits()[t.key] == (P1, credited)
    assert ledger.outcome(P1).status == "confirming"
    assert [(e.payment_id, e.type) for e in ledger.events()] == [(P1, "status_changed")]
    assert ledger.apply(t, [P1]) is None  # and there it stays
