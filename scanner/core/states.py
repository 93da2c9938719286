"""The payment states from scratch (docs/design.md, "Payment states"): what a payment's credits and
the finality make of it, as plain functions. The :class:`~scanner.core.ledger.Ledger` keeps a
batch's payments at exactly these answers (final states aside, which are sticky)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import msgspec

from scanner.core.finality import credit_confirmations, credit_final
from scanner.core.model import OPEN_STATES, Credit, Finality, Payment, PaymentOutcome, Status

#: The edges walked from one status to another, one status_changed event per edge.
PATHS: Final[Mapping[tuple[Status, Status], tuple[Status, ...]]] = {
    ("pending", "confirming"): ("confirming",),
    ("pending", "confirmed"): ("confirming", "confirmed"),
    ("pending", "expired"): ("expired",),
    ("confirming", "pending"): ("pending",),
    ("confirming", "confirmed"): ("confirmed",),
    ("confirming", "expired"): ("pending", "expired"),
    # Only after a gateway edit (an expiry extended, an amount lowered): see Ledger.revise.
    ("expired", "pending"): ("pending",),
    ("expired", "confirming"): ("pending", "confirming"),
    ("expired", "confirmed"): ("pending", "confirming", "confirmed"),
}


class Settled(msgspec.Struct, frozen=True, gc=False):
    """A payment's counted credits that were not loaded, all final (a range loads only the
    not-yet-final ones of most payments: cost independent of history): their total
    value, how many, and the first and last blocks among them. They count like the credits
    they stand for and never change; :data:`NOTHING` when every credit is loaded."""

    value: int = 0
    credits: int = 0
    first: int | None = None
    last: int | None = None

    def __post_init__(self) -> None:
        # a credit of value 0 is possible (a row edited by hand), value without credits is not
        if self.value < 0 or self.credits < 0 or (self.credits == 0 and self.value != 0):
            raise ValueError(f"settled credits do not add up: {self}")
        empty = self.credits == 0
        if (self.first is None) != empty or (self.last is None) != empty:
            raise ValueError(f"settled credits without blocks: {self}")

    def plus(self, counted: Iterable[Credit]) -> Settled:
        """These and ``counted`` (counted credits) as one total."""
        credits = list(counted)
        blocks = [c.block_number for c in credits]
        if self.first is not None and self.last is not None:
            blocks += [self.first, self.last]
        return Settled(
            self.value + sum(c.value for c in credits),
            self.credits + len(credits),
            min(blocks, default=None),
            max(blocks, default=None),
        )


NOTHING: Final = Settled()


def amount_received(credits: Iterable[Credit], settled: Settled = NOTHING) -> int:
    """The sum of the counted (neither orphaned nor late) credits."""
    return settled.value + sum(credit.value for credit in credits if credit.counted)


def final(credit: Credit, finality: Finality) -> bool:
    return credit.final or credit_final(credit.block_number, credit.verified, finality)


def confirmations_of(credit: Credit, finality: Finality) -> int:
    """A credit stored as final keeps the count that made it final (block mode)."""
    if credit.final:
        return _final_confirmations(credit.block_number, finality)
    return credit_confirmations(credit.block_number, finality)


def target_status(
    amount: int,
    expires_at: float,
    credits: Iterable[Credit],
    finality: Finality | None,
    settled: Settled = NOTHING,
) -> Status:
    """The status a non-final payment should have, from scratch (``None``: finality unknown)."""
    counted = [credit for credit in credits if credit.counted]
    done = finality is not None and all(final(c, finality) for c in counted)
    return decide(amount, expires_at, amount_received(counted, settled), done, finality)


def decide(
    amount: int, expires_at: float, received: int, final: bool, finality: Finality | None
) -> Status:
    """The status a non-final payment should have when ``received`` is counted and ``final``
    says whether every counted credit is final under ``finality`` (``None``: unknown)."""
    if received >= amount:
        return "confirmed" if finality is not None and final else "confirming"
    if (
        finality is not None
        and finality.final_timestamp is not None
        and finality.final_timestamp > expires_at
    ):
        return "expired"
    return "pending"


def summarize(
    status: str,
    credits: Iterable[Credit],
    finality: Finality | None,
    settled: Settled = NOTHING,
) -> PaymentOutcome:
    """The payment row's columns for ``status`` and ``credits`` (0 confirmations sans finality).

    The fewest confirmations among the settled credits are their last block's, as a final
    credit's (:func:`confirmations_of`)."""
    counted = [credit for credit in credits if credit.counted]
    total = settled.plus(counted)
    confirmations = 0
    if finality is not None:
        counts = [confirmations_of(c, finality) for c in counted]
        if settled.last is not None:
            counts.append(_final_confirmations(settled.last, finality))
        confirmations = min(counts, default=0)
    return PaymentOutcome(
        status=status,
        amount_received=total.value,
        confirmations=confirmations,
        detected_in_block=total.first,
    )


def _final_confirmations(block: int, finality: Finality) -> int:
    """A final credit's confirmations (as :func:`confirmations_of` counts them), in ``block``."""
    if finality.required is not None:
        return finality.required
    return credit_confirmations(block, finality)


def recompute(payment: Payment, credits: Iterable[Credit], finality: Finality) -> PaymentOutcome:
    """The payment's outcome from scratch; a final status (confirmed, expired) is kept as is."""
    credits = list(credits)
    status = payment.status
    if status in OPEN_STATES:
        status = target_status(payment.amount, payment.expires_at, credits, finality)
    return summarize(status, credits, finality)
