"""One payment in a :class:`~scanner.core.ledger.Ledger`: its credits and running sums over them.

The sums (counted value; credits not yet final, how many unverified, the newest block among
them) are kept as each credit is put or removed, so that a transfer costs the same whatever
the payment's history in the batch (cost independent of history). Their answers are
:func:`~scanner.core.states.target_status`'s, from scratch, which the property tests hold the
ledger to.
"""

from __future__ import annotations

from scanner.core.matching import PaymentView
from scanner.core.model import Credit, Finality, Payment, Status
from scanner.core.states import Settled, decide

Key = tuple[str, int]


class Entry:
    """A loaded payment, its credits, and running sums over its counted credits, kept as each
    credit is put or removed, so that a transfer costs the same whatever the payment's history
    in the batch (cost independent of history)."""

    __slots__ = (
        "_status",
        "_top",
        "_view",
        "credits",
        "open",
        "payment",
        "settled",
        "unverified",
        "value"
    )  # fmt: skip

    def __init__(self, payment: Payment, settled: Settled) -> None:
        self.payment = payment
        self._status: str = payment.status
        self._view: PaymentView | None = None  # what matching sees, until the entry changes
        self.credits: dict[Key, Credit] = {}
        self.settled = settled  # counted final credits not loaded
        self.value = 0  # the counted loaded credits' value
        self.open = 0  # counted credits not stored final
        self.unverified = 0  # of those, not verified
        self._top: int | None = -1  # their newest block (-1: none; None: to recount)

    @property
    def status(self) -> str:
        return self._status

    @status.setter
    def status(self, status: str) -> None:
        self._status = status
        self._view = None

    def view(self) -> PaymentView:
        """The payment as matching sees it now."""
        if self._view is None:
            p = self.payment
            self._view = PaymentView(
                p.id, p.created_at, p.expires_at, self._status, p.amount, self.received
            )
        return self._view

    def put(self, credit: Credit) -> None:
        self._view = None
        if credit.key in self.credits:
            self.remove(credit.key)
        self.credits[credit.key] = credit
        if credit.counted:
            self.value += credit.value
            if not credit.final:
                self.open += 1
                self.unverified += not credit.verified
                if self._top is not None:
                    self._top = max(self._top, credit.block_number)

    def remove(self, key: Key) -> None:
        self._view = None
        credit = self.credits.pop(key)
        if credit.counted:
            self.value -= credit.value
            if not credit.final:
                self.open -= 1
                self.unverified -= not credit.verified
                if credit.block_number == self._top:
                    self._top = None

    @property
    def received(self) -> int:
        return self.settled.value + self.value

    def all_final(self, finality: Finality) -> bool:
        """Whether every counted credit is final under ``finality`` (``states.final``)."""
        if not self.open:
            return True
        if finality.verify and self.unverified:
            return False
        if self._top is None:
            self._top = max(
                c.block_number for c in self.credits.values() if c.counted and not c.final
            )
        return self._top <= finality.final_block

    def target(self, finality: Finality | None) -> Status:
        """The status this payment's credits and ``finality`` call for (if it were open)."""
        p = self.payment
        final = finality is not None and self.all_final(finality)
        return decide(p.amount, p.expires_at, self.received, final, finality)
