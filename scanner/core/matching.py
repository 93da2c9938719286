"""Which payment a transfer goes to (docs/design.md, "Matching").

A transfer's *candidates* are the payments on the same chain, token and address that were created
no later than the transfer's block timestamp plus ``grace`` (clock skew between the gateway and
the chain). A payment created after the transfer is never a candidate: deposit addresses get
reused. Candidates are ordered by ``(created_at, id)``. The transfer goes, whole, to:

1. the oldest ``pending`` in-time candidate whose outstanding amount equals the value exactly;
2. else the oldest ``pending`` in-time candidate;
3. else the oldest ``confirming`` in-time candidate (an overpayment);
4. else the newest candidate, whatever its state or time.

Refinement of docs/design.md (rules 1–3 only look at candidates *in time*): a candidate is in time
for a transfer when ``expires_at >= block_timestamp``. Without this, a payment that the table still
shows as ``pending`` (its expiry not yet final) but whose ``expires_at`` is before the transfer's
block would swallow, as a late payment, funds meant for a newer payment on the same reused address.
Rule 4 still sees every candidate, so funds sent to a known address are never dropped.

``late`` is always ``block_timestamp > expires_at`` of the chosen payment: a late credit is
recorded (and gets a ``paid_late`` event) but never counts towards ``amount_received``.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from uuid import UUID

import msgspec

from scanner.core.model import Transfer


class PaymentView(msgspec.Struct, frozen=True, gc=False):
    """What matching needs to know of a payment; ``received`` is its counted base units."""

    id: UUID
    created_at: float
    expires_at: float
    status: str
    amount: int
    received: int


_order = attrgetter("created_at", "id")  # oldest first; the id breaks ties


class Choice(msgspec.Struct, frozen=True, gc=False):
    payment_id: UUID
    late: bool


def choose(transfer: Transfer, candidates: Sequence[PaymentView], grace: int) -> Choice | None:
    """The payment ``transfer`` goes to, or ``None`` when no payment is a candidate at all.

    ``candidates`` are the payments on the transfer's token and address, in any order and any
    state; the created-at cut-off (``created_at <= block_timestamp + grace``) is applied here.
    """
    when = transfer.block_timestamp
    cutoff = when + grace
    eligible = sorted((view for view in candidates if view.created_at <= cutoff), key=_order)
    if not eligible:
        return None
    chosen = _in_time_choice(transfer.value, [v for v in eligible if v.expires_at >= when])
    if chosen is None:
        chosen = eligible[-1]
    return Choice(payment_id=chosen.id, late=when > chosen.expires_at)


def _in_time_choice(value: int, in_time: Sequence[PaymentView]) -> PaymentView | None:
    """Rules 1–3 over in-time candidates, oldest first."""
    pending = [view for view in in_time if view.status == "pending"]
    for view in pending:
        if view.amount - view.received == value:
            return view
    if pending:
        return pending[0]
    for view in in_time:
        if view.status == "confirming":
            return view
    return None
