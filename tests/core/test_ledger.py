"""The payment state machine of docs/design.md ("Payment states" and "Matching"), rule by rule."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from uuid import UUID

import pytest

from scanner.core.finality import finality_at
from scanner.core.ledger import Ledger, recompute
from scanner.core.model import Credit, Event, Finality, Payment, PaymentOutcome, Transfer
from tests.core.builders import (
    GRACE,
    OTHER_ADDRESS,
    TIMESTAMPS,
    fin,
    payment,
    pid,
    transfer,
    ts,
)

P1, P2, P3 = pid(1), pid(2), pid(3)


class Book:
    """A Ledger plus its payments: transfers go to every payment on their address."""

    def __init__(self, *payments: Payment, credits: dict[UUID, list[Credit]] | None = None):
        self.payments = payments
        self.ledger = Ledger(payments, credits or {}, GRACE)

    def feed(self, *transfers: Transfer) -> list[Credit | None]:
        return [self.ledger.apply(t, self.candidates(t)) for t in transfers]

    def candidates(self, t: Transfer) -> list[UUID]:
        return [p.id for p in self.payments if (p.token, p.address) == (t.token, t.to_address)]

    def advance(self, finality: Finality) -> None:
        self.ledger.advance(finality)

    def orphan(self, *transfers: Transfer) -> None:
        self.ledger.orphan([t.key for t in transfers])

    def out(self, payment_id: UUID) -> PaymentOutcome:
        return self.ledger.outcome(payment_id)

    def trail(self, payment_id: UUID) -> list[tuple[str, ...]]:
        return trail(self.ledger.events(), payment_id)


def trail(events: Iterable[Event], payment_id: UUID) -> list[tuple[str, ...]]:
    """A payment's events, compactly: (status_changed, from, to) or (type, tx, block)."""
    out: list[tuple[str, ...]] = []
    for event in events:
        if event.payment_id != payment_id:
            continue
        if event.type == "status_changed":
            out.append((event.type, str(event.status_from), str(event.status_to)))
        else:
            out.append((event.type, tx(event.data["tx_hash"]), str(event.data.get("block_number"))))
    return out


def tx(value: object) -> str:
    """The short name of a transaction: its number, from ``transfer(n, ...)``."""
    return str(int(str(value), 16)) if isinstance(value, str) else f"{value}"


def credit(n: int, block: int, value: int, *, late: bool = False, orphaned: bool = False) -> Credit:
    t = transfer(n, block, value)
    return Credit(
        t.tx_hash, t.log_index, block, t.block_hash, t.block_timestamp, value, late, orphaned
    )


def no_timestamp(checked: int) -> Finality:
    return Finality(checked=checked, final_block=checked - 2, final_timestamp=None, required=3)


def status_steps(events: Sequence[Event], payment_id: UUID) -> list[tuple[str, str]]:
    return [
        (str(e.status_from), str(e.status_to))
        for e in events
        if e.payment_id == payment_id and e.type == "status_changed"
    ]


class TestStates:
    def test_partials_accumulate_until_paid(self) -> None:
        book = Book(payment(1, 10))
        book.advance(fin(9))
        book.feed(transfer(1, 10, 3), transfer(2, 11, 4))
        assert (book.out(P1).status, book.out(P1).amount_received) == ("pending", 7)
        book.feed(transfer(3, 12, 3))
        out = book.out(P1)
        assert (out.status, out.amount_received, out.detected_in_block) == ("confirming", 10, 10)
        assert book.trail(P1) == [
            ("transfer_detected", "1", "10"),
            ("transfer_detected", "2", "11"),
            ("transfer_detected", "3", "12"),
            ("status_changed", "pending", "confirming"),
        ]
        assert book.ledger.events()[-1].data == {"amount_received": 10}

    def test_confirming_becomes_confirmed_when_every_counted_credit_is_final(self) -> None:
        book = Book(payment(1, 10))
        book.feed(transfer(1, 10, 6), transfer(2, 12, 4))
        book.advance(fin(12, required=3))  # final up to 10
        assert (book.out(P1).status, book.out(P1).confirmations) == ("confirming", 1)
        book.advance(fin(13, required=3))  # final up to 11
        assert book.out(P1).status == "confirming"
        book.advance(fin(14, required=3))  # final up to 12
        out = book.out(P1)
        assert (out.status, out.confirmations, out.amount_received) == ("confirmed", 3, 10)
        assert book.trail(P1)[-1] == ("status_changed", "confirming", "confirmed")

    def test_pending_to_confirmed_at_once_emits_both_events(self) -> None:
        book = Book(payment(1, 10))
        book.advance(fin(50))  # already final when seen (a catch-up, a backfill)
        book.feed(transfer(1, 10, 10))
        assert book.out(P1).status == "confirmed"
        assert book.trail(P1) == [
            ("transfer_detected", "1", "10"),
            ("status_changed", "pending", "confirming"),
            ("status_changed", "confirming", "confirmed"),
        ]

    def test_underpaid_payment_expires_when_the_first_block_after_expiry_is_final(self) -> None:
        book = Book(payment(1, 10, expires=ts(20) + 5))
        book.feed(transfer(1, 10, 4))
        book.advance(fin(22, required=3))  # final block 20: not after expires_at
        assert book.out(P1).status == "pending"
        book.advance(fin(23, required=3))  # final block 21: after expires_at
        out = book.out(P1)
        assert (out.status, out.amount_received) == ("expired", 4)  # underpaid
        assert book.trail(P1)[-1] == ("status_changed", "pending", "expired")
        assert book.ledger.events()[-1].data == {"amount_received": 4}

    def test_unpaid_payment_expires(self) -> None:
        book = Book(payment(1, 10, expires=ts(20)))
        book.advance(fin(30))
        assert book.out(P1) == PaymentOutcome("expired", 0, 0, None)

    def test_no_expiry_decision_without_a_final_timestamp(self) -> None:
        book = Book(payment(1, 10, expires=ts(1)))
        book.advance(no_timestamp(30))
        assert book.out(P1).status == "pending"

    def test_paid_in_time_confirms_after_expiry(self) -> None:
        book = Book(payment(1, 10, expires=ts(10) + 5))
        book.feed(transfer(1, 10, 10))
        book.advance(fin(11))
        assert book.out(P1).status == "confirming"
        book.advance(fin(40))  # long after expires_at
        assert book.out(P1).status == "confirmed"
        assert status_steps(book.ledger.events(), P1) == [
            ("pending", "confirming"),
            ("confirming", "confirmed"),
        ]

    def test_expired_is_final_and_a_late_transfer_is_recorded_late(self) -> None:
        book = Book(payment(1, 10, expires=ts(5), status="expired"))
        (credited,) = book.feed(transfer(1, 10, 10))
        assert credited is not None and credited.late and not credited.orphaned
        assert (book.out(P1).status, book.out(P1).amount_received) == ("expired", 0)
        assert book.trail(P1) == [("transfer_detected", "1", "10"), ("paid_late", "1", "10")]
        assert book.ledger.events()[1].data == {
            "tx_hash": credited.tx_hash,
            "log_index": 0,
            "block_number": 10,
            "value": 10,
            "late": True,
        }

    def test_late_transfer_to_a_still_pending_payment_is_late_and_not_counted(self) -> None:
        book = Book(payment(1, 10, expires=ts(5)))
        book.advance(fin(9, required=20))  # the expiry is not final yet
        book.feed(transfer(1, 10, 10))
        out = book.out(P1)
        assert (out.status, out.amount_received, out.detected_in_block) == ("pending", 0, None)
        assert book.trail(P1) == [("transfer_detected", "1", "10"), ("paid_late", "1", "10")]
        book.advance(fin(30, required=20))
        assert book.out(P1).status == "expired"
        assert book.ledger.events()[-1].data == {"amount_received": 0}  # late is not received

    def test_confirmed_is_final_and_an_in_time_transfer_is_a_counted_overpayment(self) -> None:
        book = Book(payment(1, 10, status="confirmed"), credits={P1: [credit(1, 5, 10)]})
        book.feed(transfer(2, 10, 3))
        assert (book.out(P1).status, book.out(P1).amount_received) == ("confirmed", 13)
        assert book.trail(P1) == [("transfer_detected", "2", "10")]

    def test_overpayment_is_visible(self) -> None:
        book = Book(payment(1, 10))
        book.feed(transfer(1, 10, 25))
        assert (book.out(P1).status, book.out(P1).amount_received) == ("confirming", 25)

    def test_confirmations_are_the_fewest_among_counted_credits(self) -> None:
        book = Book(payment(1, 10))
        book.feed(transfer(1, 10, 4), transfer(2, 15, 4))
        book.advance(fin(20, required=12))
        assert (book.out(P1).confirmations, book.out(P1).detected_in_block) == (6, 10)

    def test_tag_mode(self) -> None:
        book = Book(payment(1, 10))
        book.feed(transfer(1, 10, 10))
        book.advance(finality_at(15, required=None, tag_block=9, timestamps=TIMESTAMPS))
        assert (book.out(P1).status, book.out(P1).confirmations) == ("confirming", 6)
        book.advance(finality_at(15, required=None, tag_block=20, timestamps=TIMESTAMPS))
        assert book.out(P1).status == "confirmed"


class TestMatchingThroughTheLedger:
    def test_exact_amount_preferred(self) -> None:
        book = Book(payment(1, 10, created=ts(1)), payment(2, 5, created=ts(2)))
        book.feed(transfer(1, 10, 5))
        assert (book.out(P1).amount_received, book.out(P2).status) == (0, "confirming")

    def test_oldest_pending_first(self) -> None:
        book = Book(payment(1, 10, created=ts(1)), payment(2, 10, created=ts(2)))
        book.feed(transfer(1, 10, 4), transfer(2, 11, 4))
        assert (book.out(P1).amount_received, book.out(P2).amount_received) == (8, 0)

    def test_exact_outstanding_after_partials(self) -> None:
        book = Book(payment(1, 10, created=ts(1)), payment(2, 6, created=ts(2)))
        book.feed(transfer(1, 10, 4), transfer(2, 11, 6))  # 6 = P1's outstanding, P2's amount
        assert (book.out(P1).amount_received, book.out(P2).amount_received) == (10, 0)

    def test_oldest_confirming_takes_the_overpayment(self) -> None:
        book = Book(payment(1, 5, created=ts(1)), payment(2, 5, created=ts(2)))
        book.feed(transfer(1, 10, 5), transfer(2, 10, 5, log_index=1), transfer(3, 11, 2))
        assert (book.out(P1).amount_received, book.out(P2).amount_received) == (7, 5)

    def test_newest_expired_gets_a_late_transfer(self) -> None:
        book = Book(
            payment(1, 5, created=ts(1), expires=ts(3), status="expired"),
            payment(2, 5, created=ts(2), expires=ts(4), status="expired"),
        )
        book.feed(transfer(1, 10, 5))
        assert book.trail(P2) == [("transfer_detected", "1", "10"), ("paid_late", "1", "10")]
        assert book.trail(P1) == []

    def test_created_after_the_transfer_is_never_credited(self) -> None:
        book = Book(payment(1, 5, created=ts(10) + GRACE + 1))
        assert book.feed(transfer(1, 10, 5)) == [None]
        assert book.ledger.events() == []
        assert book.ledger.credits() == {}
        assert book.ledger.changed() == {}

    def test_grace(self) -> None:
        book = Book(payment(1, 5, created=ts(10) + GRACE))
        (credited,) = book.feed(transfer(1, 10, 5))
        assert credited is not None and not credited.late

    def test_reused_address_pays_the_new_payment_not_the_stale_pending_one(self) -> None:
        book = Book(
            payment(1, 5, created=ts(1), expires=ts(5)),  # pending in the table, out of time
            payment(2, 5, created=ts(8), expires=ts(50)),
        )
        book.feed(transfer(1, 10, 5))
        assert (book.out(P1).amount_received, book.out(P2).status) == (0, "confirming")

    def test_other_address_is_not_a_candidate(self) -> None:
        book = Book(payment(1, 5), payment(2, 5, address=OTHER_ADDRESS))
        book.feed(transfer(1, 10, 5, to=OTHER_ADDRESS))
        assert (book.out(P1).amount_received, book.out(P2).amount_received) == (0, 5)

    def test_a_candidate_on_another_address_is_refused(self) -> None:
        book = Book(payment(1, 5, address=OTHER_ADDRESS))
        with pytest.raises(ValueError, match="not a candidate"):
            book.ledger.apply(transfer(1, 10, 5), [P1])

    def test_a_candidate_of_another_token_is_refused(self) -> None:
        book = Book(payment(1, 5, token=None))
        with pytest.raises(ValueError, match="not a candidate"):
            book.ledger.apply(transfer(1, 10, 5), [P1])

    def test_an_unloaded_candidate_is_refused(self) -> None:
        book = Book(payment(1, 5))
        with pytest.raises(ValueError, match="not loaded"):
            book.ledger.apply(transfer(1, 10, 5), [P2])


class TestReorgs:
    def test_confirming_goes_back_to_pending_when_funds_vanish(self) -> None:
        book = Book(payment(1, 10))
        t = transfer(1, 10, 10)
        book.feed(t)
        book.orphan(t)
        out = book.out(P1)
        assert (out.status, out.amount_received, out.detected_in_block) == ("pending", 0, None)
        assert book.trail(P1) == [
            ("transfer_detected", "1", "10"),
            ("status_changed", "pending", "confirming"),
            ("transfer_orphaned", "1", "10"),
            ("status_changed", "confirming", "pending"),
        ]
        assert book.ledger.credits()[t.key][1].orphaned

    def test_re_mined_transaction_is_credited_once(self) -> None:
        book = Book(payment(1, 10))
        old = transfer(1, 10, 10)
        new = transfer(1, 11, 10, variant=1)  # the same transaction, re-mined in another block
        book.feed(old)
        book.orphan(old)
        book.feed(new)
        assert book.out(P1) == PaymentOutcome("confirming", 10, 0, 11)
        (key,) = book.ledger.credits()
        assert book.ledger.credits()[key] == (P1, credit_of(new))
        assert len(book.ledger.payment_credits(P1)) == 1

    def test_re_mined_without_orphaning_first_replaces_the_old_credit(self) -> None:
        book = Book(payment(1, 10))
        book.feed(transfer(1, 10, 10))
        book.feed(transfer(1, 11, 10, variant=1))
        assert book.out(P1).amount_received == 10
        assert book.ledger.payment_credits(P1) == [credit_of(transfer(1, 11, 10, variant=1))]
        assert [step[0] for step in book.trail(P1)] == [
            "transfer_detected",
            "status_changed",
            "transfer_orphaned",
            "status_changed",
            "transfer_detected",
            "status_changed",
        ]

    def test_re_mined_transfer_can_move_to_another_payment(self) -> None:
        # P1 expires by the time the transaction is mined again; the newer P2 is now in time.
        book = Book(
            payment(1, 10, created=ts(1), expires=ts(10)),
            payment(2, 10, created=ts(12), expires=ts(100)),
        )
        t = transfer(1, 10, 10)
        book.feed(t)
        book.orphan(t)
        book.feed(transfer(1, 20, 10, variant=1))
        assert book.ledger.payment_credits(P1) == []
        assert book.out(P2).amount_received == 10
        assert book.ledger.credits()[t.key][0] == P2
        assert P1 in book.ledger.changed()

    def test_idempotent_re_apply(self) -> None:
        book = Book(payment(1, 10))
        t = transfer(1, 10, 10)
        assert book.feed(t)[0] is not None
        events = book.ledger.events()
        assert book.feed(t) == [None]
        assert book.ledger.events() == events

    def test_idempotent_across_ledgers(self) -> None:
        t = transfer(1, 10, 10)
        book = Book(payment(1, 10, status="confirming"), credits={P1: [credit_of(t)]})
        assert book.feed(t) == [None]
        assert book.ledger.events() == []
        assert book.ledger.credits() == {}

    def test_confirmed_reverted(self) -> None:
        t = transfer(1, 10, 10)
        book = Book(payment(1, 10, status="confirmed"), credits={P1: [credit_of(t)]})
        book.orphan(t)
        out = book.out(P1)
        assert (out.status, out.amount_received) == ("confirmed", 0)
        (orphaned, reverted) = book.ledger.events()
        assert orphaned.type == "transfer_orphaned"
        assert reverted.type == "confirmed_reverted"
        assert reverted.data == {"amount_received": 0, "tx_hash": t.tx_hash, "log_index": 0}

    def test_confirming_that_loses_funds_after_expiry_walks_through_pending(self) -> None:
        # Unreachable with consistent timestamps (an in-time credit is final once a block after
        # expires_at is), but the path must still be one edge at a time.
        book = Book(payment(1, 10, expires=ts(12)))
        t = transfer(1, 12, 10)
        book.feed(t)
        book.advance(Finality(checked=15, final_block=11, final_timestamp=ts(13), required=5))
        assert book.out(P1).status == "confirming"
        book.orphan(t)
        assert status_steps(book.ledger.events(), P1) == [
            ("pending", "confirming"),
            ("confirming", "pending"),
            ("pending", "expired"),
        ]

    def test_orphan_is_idempotent(self) -> None:
        book = Book(payment(1, 10))
        t = transfer(1, 10, 10)
        book.feed(t)
        book.orphan(t)
        count = len(book.ledger.events())
        book.orphan(t)
        assert len(book.ledger.events()) == count

    def test_orphan_returns_the_keys_it_does_not_know(self) -> None:
        book = Book(payment(1, 10))
        known, unknown = transfer(1, 10, 10), transfer(2, 10, 10, log_index=1)
        book.feed(known)
        assert book.ledger.orphan([unknown.key, known.key]) == [unknown.key]
        assert book.out(P1).amount_received == 0
        assert [e.type for e in book.ledger.events()].count("transfer_orphaned") == 1

    def test_orphaned_late_credit_does_not_change_the_amount(self) -> None:
        book = Book(payment(1, 10, expires=ts(5), status="expired"))
        t = transfer(1, 10, 10)
        book.feed(t)
        book.orphan(t)
        assert [e.type for e in book.ledger.events()] == [
            "transfer_detected",
            "paid_late",
            "transfer_orphaned",
        ]


class TestResults:
    def test_changed_and_credits(self) -> None:
        book = Book(payment(1, 10), payment(2, 10, address=OTHER_ADDRESS), payment(3, 10))
        t = transfer(1, 10, 4)
        book.feed(t)
        book.advance(fin(10, required=3))
        assert set(book.ledger.changed()) == {P1}
        assert book.ledger.changed()[P1] == PaymentOutcome("pending", 4, 1, 10)
        assert book.ledger.credits() == {t.key: (P1, credit_of(t))}

    def test_advance_alone_writes_payments_with_counted_credits(self) -> None:
        book = Book(
            payment(1, 10, status="confirming"), payment(2, 10), credits={P1: [credit(1, 5, 10)]}
        )
        book.advance(fin(6))
        assert book.ledger.changed() == {P1: PaymentOutcome("confirming", 10, 2, 5)}
        assert book.ledger.events() == []

    def test_advance_a_subset(self) -> None:
        book = Book(payment(1, 10, expires=ts(1)), payment(2, 10, expires=ts(1)))
        book.ledger.advance(fin(30), [P2])
        assert (book.out(P1).status, book.out(P2).status) == ("pending", "expired")

    def test_loaded_credits_count(self) -> None:
        book = Book(
            payment(1, 10),
            credits={
                P1: [credit(1, 5, 4), credit(2, 6, 3, late=True), credit(3, 7, 9, orphaned=True)]
            },
        )
        book.feed(transfer(4, 10, 6))
        assert (book.out(P1).status, book.out(P1).amount_received) == ("confirming", 10)

    def test_a_credit_on_two_payments_is_refused(self) -> None:
        with pytest.raises(ValueError, match="two payments"):
            Book(
                payment(1, 10),
                payment(2, 10),
                credits={P1: [credit(1, 5, 4)], P2: [credit(1, 5, 4)]},
            )

    def test_zero_value_transfer_is_refused(self) -> None:
        with pytest.raises(ValueError, match="> 0"):
            Book(payment(1, 10)).feed(transfer(1, 10, 0))

    def test_zero_amount_is_refused(self) -> None:
        with pytest.raises(ValueError, match="> 0"):
            Book(payment(1, 0))


class TestRecompute:
    def test_from_scratch(self) -> None:
        credits = [credit(1, 5, 4), credit(2, 6, 6), credit(3, 7, 9, orphaned=True)]
        assert recompute(payment(1, 10), credits, fin(7)) == PaymentOutcome("confirming", 10, 2, 5)
        assert recompute(payment(1, 10), credits, fin(8)) == PaymentOutcome("confirmed", 10, 3, 5)

    def test_expired(self) -> None:
        credits = [credit(1, 5, 4), credit(2, 30, 6, late=True)]
        p = payment(1, 10, expires=ts(20))
        assert recompute(p, credits, fin(40)) == PaymentOutcome("expired", 4, 3, 5)

    def test_final_states_are_sticky(self) -> None:
        p = payment(1, 10, status="confirmed")
        assert recompute(p, [], fin(40)) == PaymentOutcome("confirmed", 0, 0, None)
        p = payment(1, 10, status="expired")
        assert recompute(p, [credit(1, 5, 10)], fin(40)).status == "expired"

    def test_the_stored_non_final_status_does_not_matter(self) -> None:
        credits = [credit(1, 5, 4)]
        a = recompute(payment(1, 10, status="pending"), credits, fin(6))
        b = recompute(payment(1, 10, status="confirming"), credits, fin(6))
        assert a == b == PaymentOutcome("pending", 4, 2, 5)


def credit_of(t: Transfer, *, late: bool = False) -> Credit:
    return Credit(
        t.tx_hash,
        t.log_index,
        t.block_number,
        t.block_hash,
        t.block_timestamp,
        t.value,
        late,
        False,
    )
