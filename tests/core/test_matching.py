"""The matching rules of docs/design.md, on :func:`scanner.core.matching.choose` directly."""

from __future__ import annotations

from scanner.core.matching import Choice, PaymentView, choose
from scanner.core.model import Status
from tests.core.builders import GRACE, pid, transfer, ts

BLOCK = 100
WHEN = ts(BLOCK)


def view(
    n: int,
    amount: int = 10,
    *,
    status: Status = "pending",
    received: int = 0,
    created: float = WHEN - 1000,
    expires: float = WHEN + 1000,
) -> PaymentView:
    return PaymentView(pid(n), created, expires, status, amount, received)


def pick(value: int, *views: PaymentView) -> Choice | None:
    return choose(transfer(1, BLOCK, value), list(views), GRACE)


def test_no_candidates() -> None:
    assert pick(5) is None


def test_rule_1_exact_outstanding_amount_wins_over_older() -> None:
    older = view(1, 10, created=WHEN - 500)
    exact = view(2, 5, created=WHEN - 400)
    assert pick(5, older, exact) == Choice(pid(2), late=False)


def test_rule_1_counts_what_was_already_received() -> None:
    older = view(1, 10, created=WHEN - 500)
    partly_paid = view(2, 8, received=3, created=WHEN - 400)
    assert pick(5, older, partly_paid) == Choice(pid(2), late=False)


def test_rule_1_oldest_of_several_exact() -> None:
    a = view(1, 5, created=WHEN - 400)
    b = view(2, 5, created=WHEN - 500)
    assert pick(5, a, b) == Choice(pid(2), late=False)


def test_rule_2_oldest_pending() -> None:
    newer = view(1, 10, created=WHEN - 400)
    older = view(2, 7, created=WHEN - 500)
    assert pick(5, newer, older) == Choice(pid(2), late=False)


def test_ties_on_created_at_break_by_id() -> None:
    a = view(2, 10, created=WHEN - 400)
    b = view(1, 10, created=WHEN - 400)
    assert pick(5, a, b) == Choice(pid(1), late=False)


def test_rule_3_oldest_confirming_is_an_overpayment() -> None:
    newer = view(1, status="confirming", received=10, created=WHEN - 400)
    older = view(2, status="confirming", received=10, created=WHEN - 500)
    done = view(3, status="confirmed", received=10, created=WHEN - 600)
    assert pick(5, newer, older, done) == Choice(pid(2), late=False)


def test_pending_beats_confirming() -> None:
    confirming = view(1, status="confirming", received=10, created=WHEN - 500)
    pending = view(2, created=WHEN - 400)
    assert pick(5, confirming, pending) == Choice(pid(2), late=False)


def test_rule_4_newest_expired_records_late() -> None:
    old = view(1, status="expired", created=WHEN - 900, expires=WHEN - 500)
    newer = view(2, status="expired", created=WHEN - 800, expires=WHEN - 400)
    assert pick(5, old, newer) == Choice(pid(2), late=True)


def test_rule_4_newest_confirmed_is_an_in_time_overpayment() -> None:
    old = view(1, status="confirmed", received=10, created=WHEN - 900)
    newer = view(2, status="confirmed", received=10, created=WHEN - 800)
    assert pick(5, old, newer) == Choice(pid(2), late=False)


def test_rule_4_newest_of_any_state() -> None:
    expired = view(1, status="expired", created=WHEN - 500, expires=WHEN - 100)
    confirmed = view(2, status="confirmed", received=10, created=WHEN - 900)
    assert pick(5, expired, confirmed) == Choice(pid(1), late=True)


def test_created_after_the_transfer_is_never_a_candidate() -> None:
    assert pick(5, view(1, 5, created=WHEN + GRACE + 1)) is None


def test_grace_covers_clock_skew() -> None:
    assert pick(5, view(1, 5, created=WHEN + GRACE)) == Choice(pid(1), late=False)


def test_a_newer_payment_created_after_the_transfer_does_not_take_it() -> None:
    old = view(1, 5, status="expired", created=WHEN - 900, expires=WHEN - 500)
    future = view(2, 5, created=WHEN + GRACE + 1)
    assert pick(5, old, future) == Choice(pid(1), late=True)


def test_refinement_an_out_of_time_pending_payment_does_not_swallow_funds() -> None:
    # Still ``pending`` in the table (its expiry is not final yet) but expired by the clock.
    stale = view(1, 5, created=WHEN - 900, expires=WHEN - 1)
    fresh = view(2, 7, created=WHEN - 100)
    assert pick(5, stale, fresh) == Choice(pid(2), late=False)


def test_refinement_out_of_time_pending_still_gets_it_when_it_is_the_newest() -> None:
    stale = view(1, 5, created=WHEN - 900, expires=WHEN - 1)
    assert pick(5, stale) == Choice(pid(1), late=True)


def test_expires_exactly_at_the_block_is_in_time() -> None:
    assert pick(5, view(1, 5, expires=WHEN)) == Choice(pid(1), late=False)
