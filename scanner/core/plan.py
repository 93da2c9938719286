"""The plan of one range: every change it makes, decided from plain data without any I/O.

    load (scan/load.py, I/O) ──▶ RangeInput ──▶ plan_range (here, pure) ──▶ RangePlan
                                                 ──▶ write_plan (db/persist.py, I/O, bulk)

(:func:`plan_steps` is the same plan made a few blocks at a time, for a writer that stores the
events of each step while the next one is planned.)

A live range, a backfill range, a catch-up look-back, an idle tick and a reorg walk-back are all
the same three steps; what differs is the :class:`Mode` (a named value) and what was loaded.
The ledger is fed transfers block by block, with finality advanced to the block before each one
first (what the live scan had checked when the block arrived), so the events a payment gets do
not depend on how blocks were cut into ranges.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

import msgspec

from scanner.core import events as core_events
from scanner.core.amounts import event_data, to_amount
from scanner.core.finality import (
    blocks_to_keep,
    credit_confirmations,
    credit_final,
    finality_at,
)
from scanner.core.ledger import Ledger
from scanner.core.model import Credit, Event, Finality, Header, Payment, PaymentOutcome, Transfer
from scanner.core.states import NOTHING, Settled

Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Mode:
    """How a plan is written: a named value, read by the plan and persist steps only."""

    name: str
    moves_cursor: bool  # stores the range's block hashes, prunes old ones, sets the cursor
    orphans_replaced: bool  # stored credits whose block the range's headers replaced are orphaned
    locks_rows: bool  # payment rows are read FOR UPDATE (the gateway writes them too)
    recounts: bool = True  # every unfinal credit of the chain is counted against the finality
    #: a payment with stored totals (``payment_sums``) is loaded with its not-yet-final credits
    #: alone, unless one of the range's transfers or orphans is its (then every credit)
    settles: bool = False
    #: writes temporary copies of the tables (a dry run): no lock serializes its events
    scratch: bool = False
    #: a backfill: it reads the history itself, so it expires a pending row whether or not the
    #: live scan's look-back has looked at it yet (the live side waits for that look)
    reads_history: bool = False


LIVE = Mode("live", moves_cursor=True, orphans_replaced=True, locks_rows=True, settles=True)
BACKFILL = Mode(
    "backfill",
    moves_cursor=False,
    orphans_replaced=True,
    locks_rows=True,
    settles=True,
    reads_history=True,
)
#: A backfill --dry-run: written into temporary copies, in one transaction always rolled back.
DRY_RUN = Mode(
    "dry_run",
    moves_cursor=False,
    orphans_replaced=True,
    locks_rows=False,
    settles=True,
    scratch=True,
    reads_history=True,
)
#: A look-back for payments written behind the cursor: its blocks are the live scan's.
CATCH_UP = Mode("catch_up", moves_cursor=False, orphans_replaced=False, locks_rows=True)
#: A final range read again for logs the first read left out: only the transfers it lacks,
#: credited in their real blocks against the live cursor (already final).
SWEEP = Mode("sweep", moves_cursor=False, orphans_replaced=False, locks_rows=True, settles=True)
#: Following the gateway's edits of payment rows (recomputed from their credits).
EDIT = Mode("edit", moves_cursor=False, orphans_replaced=False, locks_rows=True)
#: Undoing the blocks above a reorg's common ancestor; the rescan counts confirmations again.
REWIND = Mode("rewind", moves_cursor=True, orphans_replaced=False, locks_rows=True, recounts=False)


@dataclass(frozen=True, slots=True)
class ChainRules:
    """The chain's settings that the rules read."""

    name: str
    required: int | None  # confirmations; None in tag mode
    tag: str | None  # "finalized" / "safe"; None in block mode
    grace: int
    reorg_depth: int
    verify: bool = False  # verify_urls: a second provider's word before a credit is final

    def finality(
        self, checked: int, tag_block: int | None, timestamps: Mapping[int, int]
    ) -> Finality:
        return finality_at(
            checked,
            required=self.required,
            tag_block=tag_block,
            timestamps=timestamps,
            verify=self.verify,
        )

    @property
    def keep_blocks(self) -> int:
        return blocks_to_keep(self.reorg_depth, self.required)


class Holding(msgspec.Struct, frozen=True, gc=False):
    """A loaded payment with what writing its rows needs (its token row and decimals)."""

    payment: Payment
    token_id: UUID | None
    decimals: int
    key: object = None  # the payment's id as stored (what writes bind); None: ``payment.id``
    token_key: object = None  # the token's id as stored; None: ``token_id``

    @property
    def row_key(self) -> object:
        return self.payment.id if self.key is None else self.key

    @property
    def token_row_key(self) -> object:
        return self.token_id if self.token_key is None else self.token_key


@dataclass(frozen=True, slots=True)
class Rewind:
    """A walk-back: the cursor goes down to ``ancestor``; the blocks above it are forgotten."""

    ancestor: int
    ancestor_hash: str | None
    depth: int


@dataclass(frozen=True, slots=True)
class RangeInput:
    """Everything one range needs, as loaded in its transaction."""

    rules: ChainRules
    mode: Mode
    start: int
    end: int
    checked: int  # the newest hash-checked block confirmations count against
    tag_block: int | None
    timestamps: Mapping[int, int]
    headers: tuple[Header, ...]
    transfers: tuple[Transfer, ...]  # in (block_number, log_index) order
    holdings: tuple[Holding, ...]
    credits: Mapping[UUID, tuple[Credit, ...]]
    orphan: tuple[Key, ...] = ()  # credits whose blocks are gone
    rewind: Rewind | None = None
    revise: tuple[UUID, ...] = ()  # payments the gateway edited: recomputed from their credits
    invalid: tuple[tuple[object, str], ...] = ()  # (id as stored, reason): invalid_payment
    edited: tuple[object, ...] = ()  # ids as stored whose edit this plan follows
    look_back: tuple[object, ...] = ()  # ids as stored left out (a credit row unreadable)
    #: payments whose final counted credits were not loaded (only their not-yet-final ones
    #: are in ``credits``): what those add up to
    settled: Mapping[UUID, Settled] = field(default_factory=dict)
    #: the transfers' transaction hashes that had ``transactions`` rows when loaded
    stored_hashes: frozenset[str] = frozenset()
    #: False for a backfill above the live cursor: the blocks between the cursor and its range
    #: are nobody's yet, so what a payment received there is unknown and no expiry is judged
    decides_expiry: bool = True
    #: with the sweep on: the first block it has not read again, and that block's time (None:
    #: not known here). An expiry waits until every block in time is swept: a log the node
    #: left out of the first read may still pay the payment, and ``expired`` is final.
    unswept: tuple[int, int | None] | None = None
    #: True for a backfill read above the live cursor, blocks between unread, that loaded a
    #: credit below its reads the live cursor has not made final: that credit's block may have
    #: been replaced unseen, so nothing is final beyond ``checked`` (the live cursor), not even
    #: as of a block of the range.
    unlinked: bool = False

    def finality(self, checked: int | None = None) -> Finality:
        """What is final as of ``checked``; ``final_timestamp``, the time an expiry is judged
        by, only as far as the sweep has read (none where no expiry is judged)."""
        at = self.checked if checked is None else checked
        found = self.rules.finality(at, self.tag_block, self.timestamps)
        if not self.decides_expiry:
            return msgspec.structs.replace(found, final_timestamp=None)
        if self.unswept is not None and found.final_block >= self.unswept[0]:
            return msgspec.structs.replace(found, final_timestamp=self.unswept[1])
        return found


class CreditRow(msgspec.Struct, frozen=True, gc=False):
    """One ``transactions`` row to insert or update; ``sender``/``recipient`` are None for a
    row that only changes (an orphaning): it exists already. ``payment_key``/``token_key``: the
    ids as stored, what the row's foreign keys bind."""

    payment_id: UUID
    payment_key: object
    token_key: object
    credit: Credit
    amount: Decimal  # whole token units
    confirmations: int
    status: str
    sender: str | None
    recipient: str | None
    new: bool = False  # no row of its transaction was stored when the range was loaded


class PaymentUpdate(msgspec.Struct, frozen=True, gc=False):
    id: UUID
    key: object  # the id as stored
    status: str
    amount_received: Decimal  # whole token units
    confirmations: int
    detected_in_block: int | None
    totals: Settled = NOTHING  # every counted credit, as one total (``payment_sums``)
    token_key: object = None  # the payment's token id as stored (what the totals are in)


class OutboxRow(msgspec.Struct, frozen=True, gc=False):
    """One ``payment_events`` row: an event with its amounts written out for the gateway, and
    the payment's id as stored."""

    event: Event
    data: Mapping[str, object]
    payment_key: object


@dataclass(frozen=True, slots=True)
class CursorMove:
    number: int
    hash: str | None
    store: tuple[Header, ...] = ()
    keep_from: int | None = None  # stored blocks below this are pruned
    reorg_depth: int | None = None  # a walk-back: blocks above ``number`` are forgotten


@dataclass(frozen=True, slots=True)
class RangePlan:
    mode: Mode
    start: int
    end: int
    finality: Finality
    credits: tuple[CreditRow, ...]
    payments: tuple[PaymentUpdate, ...]
    outbox: tuple[OutboxRow, ...]
    matched: int
    cursor: CursorMove | None
    events: tuple[Event, ...] = field(default=())
    edited: tuple[object, ...] = ()  # ids as stored whose edit is now followed
    look_back: tuple[object, ...] = ()  # ids as stored to look back for again (next tick)
    unmatched: tuple[Transfer, ...] = ()  # to a watched address; no payment could take it
    # credits in blocks the node replaced whose payments were not loaded (left alone: a row
    # unreadable): their rows are marked orphaned all the same, never left to turn final
    orphaned_unloaded: tuple[Key, ...] = ()


def plan_range(inp: RangeInput) -> RangePlan:
    """Every change the range makes: credits, orphans, payment outcomes, events, cursor."""
    steps = plan_steps(inp)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            plan: RangePlan = done.value
            return plan


#: Transfers :func:`plan_steps` credits between two of its steps (whole blocks at a time).
STEP_TRANSFERS = 2_000


def plan_steps(
    inp: RangeInput, step: int = STEP_TRANSFERS
) -> Generator[list[OutboxRow], None, RangePlan]:
    """:func:`plan_range` a few blocks at a time: after each step of about ``step`` transfers
    (whole blocks), the outbox rows of the events it made, and last the rows made after the
    steps (the payments' final advance, the edits, the invalid rows); then the plan, whose
    ``outbox`` is all of them again, in order. An event is never taken back once made, so a
    writer may store each step's rows while the next is planned."""
    ledger = Ledger([h.payment for h in inp.holdings], inp.credits, inp.rules.grace, inp.settled)
    held = {h.payment.id: h for h in inp.holdings}
    unloaded = ledger.orphan(inp.orphan)
    applied: dict[Key, Transfer] = {}
    outbox: list[OutboxRow] = []
    for _ in _apply_transfers(inp, ledger, applied, step):
        made = [_outbox(held[e.payment_id], e) for e in ledger.events_since(len(outbox))]
        outbox += made
        yield made
    finality = inp.finality()
    if inp.revise:
        ledger.advance(finality, ())  # the finality the edits are judged against
        for payment_id in inp.revise:
            ledger.revise(payment_id)
    ledger.advance(finality)
    made = [_outbox(held[e.payment_id], e) for e in ledger.events_since(len(outbox))]
    made += [invalid_outbox(key, reason) for key, reason in inp.invalid]
    outbox += made
    yield made
    return RangePlan(
        mode=inp.mode,
        start=inp.start,
        end=inp.end,
        finality=finality,
        credits=_credit_rows(held, ledger, applied, finality, inp.stored_hashes),
        payments=tuple(
            _update(held[pid], o, ledger.totals(pid)) for pid, o in ledger.changed().items()
        ),
        outbox=tuple(outbox),
        matched=len(applied),
        cursor=_cursor_move(inp),
        events=tuple(row.event for row in outbox),
        edited=inp.edited,
        look_back=inp.look_back,
        unmatched=_unmatched(inp, ledger),
        orphaned_unloaded=tuple(unloaded),
    )


def _update(holding: Holding, outcome: PaymentOutcome, totals: Settled) -> PaymentUpdate:
    received = to_amount(outcome.amount_received, holding.decimals)
    return PaymentUpdate(
        holding.payment.id,
        holding.row_key,
        outcome.status,
        received,
        outcome.confirmations,
        outcome.detected_in_block,
        totals,
        holding.token_row_key,
    )


def _outbox(holding: Holding, event: Event) -> OutboxRow:
    return OutboxRow(event, event_data(event, holding.decimals), holding.row_key)


def invalid_outbox(key: object, reason: str) -> OutboxRow:
    """``invalid_payment`` for a row, written against its id as stored (which may be no uuid)."""
    try:
        payment_id = key if isinstance(key, UUID) else UUID(str(key))
    except ValueError:  # the row's id is no uuid: the event names it as it is stored
        payment_id = UUID(int=0)
        reason = f"{reason} (id {str(key)!r:.60})"
    event = core_events.invalid_payment(payment_id, reason)
    return OutboxRow(event, dict(event.data), key)


def _apply_transfers(
    inp: RangeInput, ledger: Ledger, applied: dict[Key, Transfer], step: int
) -> Iterator[None]:
    """Credit the range's transfers block by block (the credited ones into ``applied``, by
    key), pausing after whole blocks of at least ``step`` transfers since the last pause."""
    candidates = _candidates(inp.holdings)
    by_block: dict[int, list[Transfer]] = defaultdict(list)
    for transfer in inp.transfers:
        if (transfer.to_address, transfer.token) in candidates:
            by_block[transfer.block_number].append(transfer)
    since = 0
    for number in sorted(by_block):
        block = by_block[number]
        ids = {pid for t in block for pid in candidates[(t.to_address, t.token)]}
        at = min(number - 1, inp.checked) if inp.unlinked else number - 1
        ledger.advance(inp.finality(at), ids)  # what the live scan had then
        for transfer in block:
            if ledger.apply(transfer, candidates[(transfer.to_address, transfer.token)]):
                applied[transfer.key] = transfer
        since += len(block)
        if since >= step:
            since = 0
            yield


def _unmatched(inp: RangeInput, ledger: Ledger) -> tuple[Transfer, ...]:
    """Transfers to an address some loaded payment uses that no payment took (created after the
    transfer beyond the grace, another token): never silent, though nothing is credited."""
    watched = {h.payment.address for h in inp.holdings}
    return tuple(t for t in inp.transfers if t.to_address in watched and not ledger.knows(t.key))


def _candidates(holdings: Sequence[Holding]) -> dict[tuple[str, str | None], list[UUID]]:
    out: dict[tuple[str, str | None], list[UUID]] = defaultdict(list)
    for holding in holdings:
        out[(holding.payment.address, holding.payment.token)].append(holding.payment.id)
    return dict(out)


def _credit_rows(
    held: Mapping[UUID, Holding],
    ledger: Ledger,
    applied: Mapping[Key, Transfer],
    finality: Finality,
    stored: frozenset[str],
) -> tuple[CreditRow, ...]:
    rows = []
    for key, (pid, credit) in ledger.credits().items():
        holding = held[pid]
        if credit.orphaned:
            status, confirmations = "orphaned", 0
        else:
            confirmations = credit_confirmations(credit.block_number, finality)
            final = credit_final(credit.block_number, credit.verified, finality)
            status = "confirmed" if final else "pending"
        transfer = applied.get(key)
        rows.append(
            CreditRow(
                payment_id=pid,
                payment_key=holding.row_key,
                token_key=holding.token_row_key,
                credit=credit,
                amount=to_amount(credit.value, holding.decimals),
                confirmations=confirmations,
                status=status,
                sender=transfer.from_address if transfer else None,
                recipient=transfer.to_address if transfer else None,
                new=transfer is not None and transfer.tx_hash not in stored,
            )
        )
    return tuple(rows)


def _cursor_move(inp: RangeInput) -> CursorMove | None:
    if inp.rewind is not None:
        r = inp.rewind
        return CursorMove(r.ancestor, r.ancestor_hash, reorg_depth=r.depth)
    if not inp.mode.moves_cursor or not inp.headers:
        return None
    last = inp.headers[-1]
    return CursorMove(
        last.number, last.hash, store=inp.headers, keep_from=inp.end - inp.rules.keep_blocks
    )


def status_changes(events: Sequence[Event]) -> list[tuple[str, str]]:
    """The ``(from, to)`` of each status change, in order."""
    return [(str(e.status_from), str(e.status_to)) for e in events if e.type == "status_changed"]
