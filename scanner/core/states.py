"""The payment states from scratch (DESIGN.md, "Payment states"): what a payment's credits and
the finality make of it, as plain functions. The :class:`~scanner.core.ledger.Ledger` keeps a
batch's payments at exactly these answers (final states aside, which are sticky)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

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


def amount_received(credits: Iterable[Credit]) -> int:
    """The sum of the counted (neither orphaned nor late) credits."""
    return sum(credit.value for credit in credits if credit.counted)


def final(credit: Credit, finality: Finality) -> bool:
    return credit.final or credit_final(credit.block_number, credit.verified, finality)


def confirmations_of(credit: Credit, finality: Finality) -> int:
    """A credit stored as final keeps the count that made it final (block mode)."""
    if credit.final and finality.required is not None:
        return finality.required
    return credit_confirmations(credit.block_number, finality)


def target_status(
    amount: int, expires_at: float, credits: Iterable[Credit], finality: Finality | None
) -> Status:
    """The status a non-final payment should have, from scratch (``None``: finality unknown)."""
    counted = [credit for credit in credits if credit.counted]
    if sum(credit.value for credit in counted) >= amount:
        if finality is not None and all(final(c, finality) for c in counted):
            return "confirmed"
        return "confirming"
    if (
        finality is not None
        and finality.final_timestamp is not None
        and finality.final_timestamp > expires_at
    ):
        return "expired"
    return "pending"


def summarize(status: str, credits: Iterable[Credit], finality: Finality | None) -> PaymentOutcome:
    """The payment row's columns for ``status`` and ``credits`` (0 confirmations sans finality)."""
    counted = [credit for credit in credits if credit.counted]
    confirmations = 0
    if counted and finality is not None:
        confirmations = min(confirmations_of(c, finality) for c in counted)
    return PaymentOutcome(
        status=status,
        amount_received=sum(credit.value for credit in counted),
        confirmations=confirmations,
        detected_in_block=min((c.block_number for c in counted), default=None),
    )


def recompute(payment: Payment, credits: Iterable[Credit], finality: Finality) -> PaymentOutcome:
    """The payment's outcome from scratch; a final status (confirmed, expired) is kept as is."""
    credits = list(credits)
    status = payment.status
    if status in OPEN_STATES:
        status = target_status(payment.amount, payment.expires_at, credits, finality)
    return summarize(status, credits, finality)
