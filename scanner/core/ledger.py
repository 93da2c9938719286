"""The payment state machine (docs/design.md, "Payment states"): the core's money-critical part.

    pending ──(received ≥ amount)──▶ confirming ──(every counted credit final)──▶ confirmed
       │                                  │
       │                                  └──(a reorg removed funds)──▶ pending
       └──(the final block's timestamp > expires_at, received < amount)──▶ expired

- A credit is *counted* when it is neither orphaned nor late (mined after ``expires_at``);
  ``amount_received`` is the sum of the counted credits.
- ``confirmed`` and ``expired`` are final: the ledger never leaves them. A late transfer to an
  expired payment is recorded late with ``paid_late``; one in time to a confirmed payment is a
  counted overpayment. Orphaning a counted credit of a confirmed payment keeps it confirmed and
  emits ``confirmed_reverted`` with the recomputed amount (a finality violation when the credit
  was final; the event is emitted for every counted credit, so that it is never missed).
- A late credit is a fallback, not a choice: when the catch-up reads its transfer again with a
  payment the first match could not see (written behind the cursor on a reused address) and
  that open payment is in time, the transfer moves there (``transfer_orphaned`` on the old owner,
  then ``transfer_detected``), as a re-mined transfer can. Counted credits never move.
- Status changes walk the graph one edge at a time and each edge is one ``status_changed`` event:
  a payment fully paid and final at once gets pending→confirming *and* confirming→confirmed; a
  confirming payment that loses funds after its expiry is final gets confirming→pending *and*
  pending→expired. So every path through the same blocks writes the same events per payment.

Batch independence: events depend on the finality known when a transfer is applied (a late
transfer to a pending payment whose expiry becomes final in the same block writes ``paid_late``
before or after ``status_changed`` depending on it). A pipeline that calls
``advance(finality as of block b - 1)`` before applying block ``b``'s transfers, and ``advance``
at the end of every batch, writes the same per-payment event sequence whatever its batch
boundaries; the property tests hold the ledger to that.

:func:`recompute` is the from-scratch answer that the ledger always agrees with (final states
aside, which are sticky).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import cast
from uuid import UUID

from msgspec import structs

from scanner.core import events
from scanner.core.entry import Entry, Key
from scanner.core.finality import credit_confirmations, is_final
from scanner.core.matching import PaymentView, choose
from scanner.core.model import (
    OPEN_STATES,
    Credit,
    Event,
    Finality,
    Payment,
    PaymentOutcome,
    Status,
    Transfer,
)
from scanner.core.states import (
    NOTHING,
    PATHS,
    Settled,
    amount_received,
    recompute,
    summarize,
    target_status,
)

__all__ = [
    "Ledger",
    "PaymentOutcome",
    "amount_received",
    "credit_confirmations",
    "is_final",
    "recompute",
    "summarize",
    "target_status",
]


class Ledger:
    """The payments and credits of one batch, and the changes the batch makes to them.

    Load the payments (and every credit attached to them) that the batch can touch, then feed it
    transfers in ``(block_number, log_index)`` order, orphanings and finality; read back the
    events, the payment rows and the credit rows to write in the batch's one transaction.
    A credit whose key the ledger does not know is, to the ledger, a new transfer: load every
    payment that owns a ``transactions`` row of the batch's keys (its candidates do).
    """

    def __init__(
        self,
        payments: Iterable[Payment],
        credits: Mapping[UUID, Iterable[Credit]],
        grace: int,
        settled: Mapping[UUID, Settled] | None = None,
    ) -> None:
        """``settled``: for payments whose final counted credits were not loaded, what they
        add up to (:class:`~scanner.core.states.Settled`); the others hold every credit."""
        self._grace = grace
        self._entries: dict[UUID, Entry] = {}
        self._owner: dict[Key, UUID] = {}
        self._finality: Finality | None = None
        self._events: list[Event] = []
        self._dirty_credits: dict[Key, None] = {}
        self._touched: dict[UUID, None] = {}
        for payment in payments:
            if payment.amount <= 0:
                raise ValueError(f"payment {payment.id} has amount {payment.amount}; must be > 0")
            rest = (settled or {}).get(payment.id, NOTHING)
            self._entries[payment.id] = Entry(payment, rest)
        for payment_id, loaded in credits.items():
            entry = self._entry(payment_id)
            for credit in loaded:
                if credit.key in self._owner:
                    raise ValueError(f"credit {credit.key} is attached to two payments")
                entry.put(credit)
                self._owner[credit.key] = payment_id

    # -- operations --

    def apply(self, transfer: Transfer, candidates: Sequence[UUID]) -> Credit | None:
        """Credit ``transfer`` to one of ``candidates`` (loaded payments on its token and address).

        Returns the new credit, or ``None`` when nothing changed: no candidate at all, or the
        same key already credited (not orphaned) in the same block (a rescan). A key credited in
        another block, or orphaned, is matched again and its credit replaced (one row per key);
        a live credit in another block is orphaned first (with its events). So is a rescanned
        late credit that an open payment now takes (see :meth:`_reclaims`).
        """
        if transfer.value <= 0:
            raise ValueError(f"transfer {transfer.key} has value {transfer.value}; must be > 0")
        views = self._views(candidates, transfer)
        key = transfer.key
        previous = self._owner.get(key)
        if previous is not None:
            old = self._entries[previous].credits[key]
            if not old.orphaned and old.block_hash == transfer.block_hash:
                if not self._reclaims(transfer, old, views):
                    return None
                if (retimed := self._retime(previous, old, transfer, views)) is not None:
                    return retimed
            if not old.orphaned:
                self._orphan_key(key)
                views = self._views([view.id for view in views], transfer)
        choice = choose(transfer, views, self._grace)
        if choice is None:
            return None
        if previous is not None:
            self._entries[previous].remove(key)
            self._touched[previous] = None
        return self._credit(choice.payment_id, transfer, choice.late)

    def orphan(self, keys: Iterable[Key]) -> list[Key]:
        """Mark the credits of ``keys`` orphaned (their blocks were dropped by a reorg).

        One ``transfer_orphaned`` event each, in ``(block_number, log_index)`` order, then the
        payment's status is recomputed; already orphaned keys are left alone. Returns the keys
        the ledger does not know (their payments were not loaded): nothing was done for them, and
        their rows stay as they are, so the caller should log them.
        """
        live: list[tuple[int, int, Key]] = []
        unknown: list[Key] = []
        for key in dict.fromkeys(keys):
            owner = self._owner.get(key)
            if owner is None:
                unknown.append(key)
                continue
            credit = self._entries[owner].credits[key]
            if not credit.orphaned:
                live.append((credit.block_number, credit.log_index, key))
        for _, _, key in sorted(live):
            self._orphan_key(key)
        return unknown

    def advance(self, finality: Finality, payment_ids: Iterable[UUID] | None = None) -> None:
        """Re-evaluate payments (all when ``payment_ids`` is None) against ``finality``.

        confirming → confirmed when every counted credit is final; pending → expired when the
        final block's timestamp is after ``expires_at`` and ``received < amount``. The finality is
        kept for the confirmations of :meth:`changed` and for later operations.
        """
        self._finality = finality
        ids = list(self._entries) if payment_ids is None else list(payment_ids)
        for payment_id in ids:
            entry = self._entry(payment_id)
            if entry.open:
                self._touched[payment_id] = None  # its confirmations moved (final ones do not)
            if entry.status in OPEN_STATES:
                self._settle(payment_id)

    def revise(self, payment_id: UUID) -> None:
        """Recompute a payment the gateway edited, from its credits, under its current row.

        Each credit's ``late`` follows the current ``expires_at``; ``foreign`` credits (another
        token than the payment's now) stay recorded but never count, and each gets a
        ``transfer_unmatched`` event. An ``expired`` payment that the edit no longer leaves
        expired (an expiry extended past the final block, an amount lowered to what arrived in
        time) moves on, one edge at a time; ``confirmed`` and the gateway's own statuses stay.
        """
        entry = self._entry(payment_id)
        if entry.settled != NOTHING:
            raise ValueError(f"payment {payment_id} is revised without every credit loaded")
        for key, credit in list(entry.credits.items()):
            late = credit.block_timestamp > entry.payment.expires_at
            if late != credit.late and not credit.orphaned:
                entry.put(structs.replace(credit, late=late))
                self._dirty_credits[key] = None
            if credit.foreign and not credit.orphaned:
                self._events.append(events.transfer_unmatched(payment_id, credit))
        self._touched[payment_id] = None
        if entry.status == "expired":
            self._reopen(entry)
        self._settle(payment_id)

    def _reopen(self, entry: Entry) -> None:
        target = entry.target(self._finality)
        if target != "expired":
            self._walk(entry.payment.id, entry, "expired", target)

    # -- results --

    def events(self) -> list[Event]:
        """Every event, in emission order."""
        return list(self._events)

    def events_since(self, count: int) -> list[Event]:
        """The events after the first ``count``, in emission order."""
        return self._events[count:]

    def changed(self) -> dict[UUID, PaymentOutcome]:
        """The rows to update: payments whose status, credits or confirmations may have changed.

        Confirmations are counted against the last :meth:`advance` (0 without one): advance
        before reading this, as every batch does at its end.
        """
        return {payment_id: self.outcome(payment_id) for payment_id in self._touched}

    def credits(self) -> dict[Key, tuple[UUID, Credit]]:
        """Every credit added or changed (to upsert into ``transactions``), with its payment."""
        return {
            key: (self._owner[key], self._entries[self._owner[key]].credits[key])
            for key in self._dirty_credits
        }

    def outcome(self, payment_id: UUID) -> PaymentOutcome:
        """A loaded payment's current row values."""
        entry = self._entry(payment_id)
        return summarize(entry.status, entry.credits.values(), self._finality, entry.settled)

    def totals(self, payment_id: UUID) -> Settled:
        """A loaded payment's counted credits, settled and loaded, as one total (what the
        next range reads instead of its final credits)."""
        entry = self._entry(payment_id)
        return entry.settled.plus(c for c in entry.credits.values() if c.counted)

    def knows(self, key: Key) -> bool:
        """Whether some loaded payment holds a credit (live or not) of ``key``."""
        return key in self._owner

    def payment_credits(self, payment_id: UUID) -> list[Credit]:
        """A loaded payment's credits (orphaned and late included), in block order."""
        credits = self._entry(payment_id).credits.values()
        return sorted(credits, key=lambda c: (c.block_number, c.log_index))

    @property
    def finality(self) -> Finality | None:
        """The finality of the last :meth:`advance`, if any."""
        return self._finality

    # -- internals --

    def _entry(self, payment_id: UUID) -> Entry:
        try:
            return self._entries[payment_id]
        except KeyError:
            raise ValueError(f"payment {payment_id} is not loaded into the ledger") from None

    def _views(self, candidates: Sequence[UUID], transfer: Transfer) -> list[PaymentView]:
        """What matching sees of each candidate (once each)."""
        views = []
        token, address = transfer.token, transfer.to_address
        for payment_id in dict.fromkeys(candidates):
            entry = self._entry(payment_id)
            payment = entry.payment
            if payment.token != token or payment.address != address:
                raise ValueError(
                    f"payment {payment_id} ({payment.token}, {payment.address}) is not a "
                    f"candidate for a transfer of {token} to {address}"
                )
            views.append(entry.view())
        return views

    def _reclaims(self, transfer: Transfer, old: Credit, views: Sequence[PaymentView]) -> bool:
        """Whether a rescanned transfer leaves its late credit for an open payment in time.

        A late credit is rule 4's fallback: no open payment was in time for the transfer when it
        was matched. One is now only if that match could not see it (the gateway wrote it behind
        the cursor, after the transfer; the catch-up reads the transfer again): the transfer
        moves there as a re-mined one does (``transfer_orphaned`` on the old owner, whose
        amount it never counted in). Counted credits never move.
        """
        if not old.late:
            return False
        choice = choose(transfer, views, self._grace)
        return (
            choice is not None
            and not choice.late
            and self._entries[choice.payment_id].status in OPEN_STATES
        )

    def _retime(
        self, owner: UUID, old: Credit, transfer: Transfer, views: Sequence[PaymentView]
    ) -> Credit | None:
        """A late credit that its own payment now takes in time (the gateway moved its expiry
        later): re-timed where it stands, as :meth:`revise` does; no reorg moved it, so no
        ``transfer_orphaned``. None when the transfer goes to another payment."""
        choice = choose(transfer, views, self._grace)
        if choice is None or choice.payment_id != owner:
            return None
        credit = structs.replace(old, late=False)
        self._entries[owner].put(credit)
        self._dirty_credits[credit.key] = None
        self._touched[owner] = None
        self._settle(owner)
        return credit

    def _credit(self, payment_id: UUID, transfer: Transfer, late: bool) -> Credit:
        credit = Credit(
            tx_hash=transfer.tx_hash,
            log_index=transfer.log_index,
            block_number=transfer.block_number,
            block_hash=transfer.block_hash,
            block_timestamp=transfer.block_timestamp,
            value=transfer.value,
            late=late,
            orphaned=False,
        )
        self._entries[payment_id].put(credit)
        self._owner[credit.key] = payment_id
        self._dirty_credits[credit.key] = None
        self._touched[payment_id] = None
        self._events.append(events.transfer_detected(payment_id, credit))
        if late:
            self._events.append(events.paid_late(payment_id, credit))
        self._settle(payment_id)
        return credit

    def _orphan_key(self, key: Key) -> None:
        payment_id = self._owner[key]
        entry = self._entries[payment_id]
        old = entry.credits[key]
        entry.put(structs.replace(old, orphaned=True))
        self._dirty_credits[key] = None
        self._touched[payment_id] = None
        self._events.append(events.transfer_orphaned(payment_id, old))
        if entry.status == "confirmed" and old.counted:
            received = entry.received
            self._events.append(events.confirmed_reverted(payment_id, old, received))
        self._settle(payment_id)

    def _settle(self, payment_id: UUID) -> None:
        """Move a non-final payment to the status its credits and the finality call for."""
        entry = self._entries[payment_id]
        if entry.status not in OPEN_STATES:
            return
        target = entry.target(self._finality)
        if target == entry.status:
            return
        self._walk(payment_id, entry, cast(Status, entry.status), target)  # open: the scanner's

    def _walk(self, payment_id: UUID, entry: Entry, current: Status, target: Status) -> None:
        """Move to ``target`` one edge at a time, a ``status_changed`` event per edge."""
        received = entry.received
        for step in PATHS[(current, target)]:
            self._events.append(events.status_changed(payment_id, current, step, received))
            current = step
        entry.status = target
        self._touched[payment_id] = None
