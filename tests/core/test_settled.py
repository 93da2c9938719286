"""A range that loads a payment's not-yet-final credits only, with its final counted ones as one
:class:`~scanner.core.states.Settled` total, plans exactly what it plans with every credit
loaded: the same payment rows (status, amount_received, confirmations, detected_in_block, and
the totals written to ``payment_sums``), the same events and the same credit rows.

Two properties: a single range over random stored histories (any status, final or not, late,
orphaned, re-mined transfers, a reorg's orphans), its settled total the final counted credits
summed; and a run of ranges where the store is kept between them as the scanner keeps it
(``transactions`` statuses as ``count_confirmations`` leaves them, ``payment_sums`` as
``sums.write`` leaves it), every range planned both ways and loaded as ``scan/load.py`` loads
it (``sums.settled_of`` of the stored totals). Block mode and tag mode, with and without
``verify_urls``. Also unit tests of ``Settled`` and ``sums.settled_of``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from scanner.core.finality import credit_final
from scanner.core.model import Credit, Payment, Transfer
from scanner.core.plan import (
    BACKFILL,
    LIVE,
    ChainRules,
    Holding,
    Mode,
    RangeInput,
    RangePlan,
    plan_range,
    plan_steps,
)
from scanner.core.states import NOTHING, Settled
from scanner.db.sums import settled_of
from tests.core.builders import (
    ADDRESS,
    OTHER_ADDRESS,
    TIMESTAMPS,
    TOKEN,
    block_hash,
    pid,
    transfer,
    ts,
)

GRACE = 20
SETTINGS = settings(derandomize=True, deadline=None, max_examples=300)
Key = tuple[str, int]


# --- Settled and settled_of -------------------------------------------------------------------


def credit(
    tx: int,
    block: int,
    value: int,
    *,
    late: bool = False,
    orphaned: bool = False,
    final: bool = False,
) -> Credit:
    return Credit(
        tx_hash="0x" + format(tx, "064x"),
        log_index=0,
        block_number=block,
        block_hash=block_hash(block),
        block_timestamp=ts(block),
        value=value,
        late=late,
        orphaned=orphaned,
        final=final,
    )


@pytest.mark.parametrize(
    "args",
    [
        (-1, 1, 3, 3),  # a negative value
        (-5, 0, None, None),
        (5, -1, 3, 3),  # a negative count
        (5, 0, None, None),  # a value without credits
        (5, 1, None, None),  # credits without blocks
        (5, 1, 3, None),
        (5, 1, None, 3),
        (0, 0, 3, 3),  # blocks without credits
        (0, 0, None, 3),
    ],
)
def test_settled_refuses_totals_that_do_not_add_up(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        Settled(*args)


def test_settled_holds_totals_that_add_up() -> None:
    assert Settled() == NOTHING
    s = Settled(7, 2, 3, 9)
    assert (s.value, s.credits, s.first, s.last) == (7, 2, 3, 9)
    assert Settled(1, 1, 4, 4).first == 4
    assert Settled(0, 1, 3, 3).value == 0  # a credit worth nothing (a row edited by hand)


def test_plus_adds_value_count_and_widens_the_blocks() -> None:
    assert NOTHING.plus([]) == NOTHING
    assert NOTHING.plus([credit(1, 5, 3), credit(2, 2, 4)]) == Settled(7, 2, 2, 5)
    s = Settled(10, 2, 4, 6)
    assert s.plus([]) == s
    assert s.plus([credit(1, 5, 1)]) == Settled(11, 3, 4, 6)  # inside: the blocks stay
    assert s.plus([credit(1, 1, 1), credit(2, 9, 2)]) == Settled(13, 4, 1, 9)
    assert s.plus(iter([credit(1, 7, 5)])) == Settled(15, 3, 4, 7)  # any iterable, read once


def test_settled_of_what_the_unloaded_credits_add_up_to() -> None:
    total = Settled(10, 3, 2, 9)
    loaded = [
        credit(1, 9, 4),  # counted, not final: loaded
        credit(2, 8, 100, late=True),  # never counted: not in the total
        credit(3, 7, 50, orphaned=True),
    ]
    assert settled_of(total, loaded) == Settled(6, 2, 2, 9)  # the total's blocks
    assert settled_of(total, []) == total


def test_settled_of_nothing_when_every_counted_credit_is_loaded() -> None:
    loaded = [credit(1, 5, 3), credit(2, 2, 4), credit(3, 3, 9, late=True)]
    assert settled_of(Settled(7, 2, 2, 5), loaded) == NOTHING
    assert settled_of(NOTHING, []) == NOTHING
    assert settled_of(NOTHING, [credit(1, 4, 2, orphaned=True)]) == NOTHING


@pytest.mark.parametrize(
    ("total", "values"),
    [
        (Settled(5, 1, 3, 3), [7]),  # less than what is loaded
        (Settled(5, 1, 3, 3), [2, 3]),  # fewer credits than loaded
        (Settled(6, 1, 3, 3), [5]),  # value left, no credit
        (NOTHING, [1]),  # no total at all, a counted credit loaded
        (Settled(1, 1, 3, 3), [1, 1]),
    ],
)
def test_settled_of_none_when_the_totals_do_not_add_up(total: Settled, values: list[int]) -> None:
    loaded = [credit(n, 3 + n, v) for n, v in enumerate(values, start=1)]
    assert settled_of(total, loaded) is None


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.integers(1, 40),  # block
            st.integers(1, 1000),  # value
            st.booleans(),  # loaded
            st.sampled_from(["counted", "counted", "late", "orphaned"]),
        ),
        max_size=12,
    )
)
def test_settled_of_any_split(history: list[tuple[int, int, bool, str]]) -> None:
    credits = [
        (credit(n, b, v, late=kind == "late", orphaned=kind == "orphaned"), loaded)
        for n, (b, v, loaded, kind) in enumerate(history, start=1)
    ]
    counted = [c for c, _ in credits if c.counted]
    total = NOTHING.plus(counted)
    rest = [c for c, loaded in credits if c.counted and not loaded]
    got = settled_of(total, [c for c, loaded in credits if loaded])
    if not rest:
        assert got == NOTHING
    else:
        assert got == Settled(sum(c.value for c in rest), len(rest), total.first, total.last)
    # and the loaded ones with what is left are the total again
    assert got is not None
    loaded_counted = [c for c, loaded in credits if loaded and c.counted]
    assert got.plus(loaded_counted).value == total.value
    assert got.plus(loaded_counted).credits == total.credits


# --- the rules: what a finality is, what a range loads ---------------------------------------


@dataclass(frozen=True)
class Rules:
    required: int | None  # None: tag mode
    verify: bool

    def chain(self) -> ChainRules:
        tag = None if self.required is not None else "finalized"
        return ChainRules("toy", self.required, tag, GRACE, reorg_depth=64, verify=self.verify)


rules_strategy = st.builds(
    Rules, st.one_of(st.none(), st.integers(1, 4)), st.sampled_from([False, False, True])
)


@dataclass
class StoredRow:
    """One ``transactions`` row: the credit as written, its status, its verified hash."""

    owner: UUID
    credit: Credit
    status: str  # pending / confirmed / orphaned
    verified_hash: str | None = None

    def loaded(self) -> Credit:
        """The credit as ``transactions.credits_of`` reads it back."""
        return replace(
            self.credit,
            orphaned=self.status == "orphaned",
            final=self.status == "confirmed",
            verified=self.verified_hash == self.credit.block_hash,
        )


@dataclass
class Loads:
    """Both inputs of one range: every credit, and the not-final ones with the rest settled."""

    full: RangeInput
    partial: RangeInput


def range_input(
    rules: Rules,
    mode: Mode,
    payments: Iterable[Payment],
    credits: Mapping[UUID, Sequence[Credit]],
    *,
    start: int,
    end: int,
    checked: int,
    tag_block: int | None,
    transfers: Sequence[Transfer],
    orphan: Sequence[Key],
    settled: Mapping[UUID, Settled] | None = None,
) -> RangeInput:
    return RangeInput(
        rules=rules.chain(),
        mode=mode,
        start=start,
        end=end,
        checked=checked,
        tag_block=tag_block if rules.required is None else None,
        timestamps=TIMESTAMPS,
        headers=(),
        transfers=tuple(sorted(transfers, key=lambda t: (t.block_number, t.log_index))),
        holdings=tuple(Holding(p, None, 0) for p in payments),
        credits={k: tuple(v) for k, v in credits.items()},
        orphan=tuple(orphan),
        settled=dict(settled or {}),
    )


def whole_payments(
    rows: Mapping[Key, StoredRow], transfers: Sequence[Transfer], orphan: Sequence[Key]
) -> set[UUID]:
    """The payments a range reads in full, as ``scan/load.py`` picks them: owners of a row of a
    transfer's transaction (``owners_of``: by tx hash, whatever the row's status), and owners of
    the orphaned keys."""
    hashes = {t.tx_hash for t in transfers}
    owners = {row.owner for key, row in rows.items() if key[0] in hashes}
    return owners | {rows[key].owner for key in orphan if key in rows}


def assert_same_plan(full: RangePlan, partial: RangePlan) -> None:
    """What the user sees: payment rows (and the totals written beside them), events, credit
    rows; in the same order."""
    assert {u.id: u for u in partial.payments} == {u.id: u for u in full.payments}
    assert [u.id for u in partial.payments] == [u.id for u in full.payments]
    assert partial.events == full.events
    assert partial.outbox == full.outbox
    assert partial.credits == full.credits
    assert partial.matched == full.matched
    assert partial.unmatched == full.unmatched
    assert partial.finality == full.finality


# --- 1. one range over a random stored history ------------------------------------------------


@dataclass(frozen=True)
class History:
    rules: Rules
    mode: Mode
    payments: list[Payment]
    rows: dict[Key, StoredRow]
    transfers: list[Transfer]  # the range's
    orphan: list[Key]
    start: int
    end: int
    checked: int
    tag_block: int | None


ADDRESSES = [ADDRESS, ADDRESS, OTHER_ADDRESS]
STATUSES = ["pending", "pending", "confirming", "confirmed", "expired", "cancelled"]


@st.composite
def histories(draw: st.DrawFn) -> History:
    rules = draw(rules_strategy)
    blocks = draw(st.integers(4, 40))
    payments = []
    for n in range(1, draw(st.integers(1, 4)) + 1):
        created = ts(draw(st.integers(0, blocks))) + draw(st.sampled_from([-25, 0, 19]))
        lifetime = draw(st.sampled_from([12, 60, 150, 10_000]))
        payments.append(
            Payment(
                id=pid(n),
                token=TOKEN,
                address=draw(st.sampled_from(ADDRESSES)),
                amount=draw(st.integers(1, 20)),
                status=draw(st.sampled_from(STATUSES)),
                created_at=created,
                expires_at=created + lifetime,
            )
        )
    rows: dict[Key, StoredRow] = {}
    tx = 0
    for _ in range(draw(st.integers(0, 12))):
        tx += 1
        owner = draw(st.sampled_from(payments))
        block = draw(st.integers(1, blocks))
        c = credit(tx, block, draw(st.integers(1, 6)), late=ts(block) > owner.expires_at)
        status = draw(st.sampled_from(["pending", "confirmed", "confirmed", "orphaned"]))
        verified = c.block_hash if draw(st.booleans()) else None
        rows[c.key] = StoredRow(owner.id, c, status, verified)
    start = draw(st.integers(1, blocks + 5))
    end = start + draw(st.integers(0, 6))
    checked = end + draw(st.integers(0, 5))
    transfers: list[Transfer] = []
    per_block: dict[int, int] = defaultdict(int)
    for _ in range(draw(st.integers(0, 5))):  # new transfers
        tx += 1
        block = draw(st.integers(start, end))
        to = draw(st.sampled_from(ADDRESSES))
        value = draw(st.integers(1, 8))
        transfers.append(transfer(tx, block, value, log_index=per_block[block] + 1, to=to))
        per_block[block] += 1
    keys = sorted(rows)
    if keys:  # stored transfers seen again: in the same block (a rescan) or re-mined
        for key in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)):
            old = rows[key].credit
            if draw(st.booleans()) and start <= old.block_number <= end:
                block, variant = old.block_number, 0
            else:
                block, variant = draw(st.integers(start, end)), draw(st.integers(1, 3))
            t = transfer(int(key[0], 16), block, old.value, log_index=0, variant=variant)
            transfers.append(replace(t, to_address=owner_of(payments, rows[key]).address))
    orphan = draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)) if keys else []
    mode = draw(st.sampled_from([LIVE, BACKFILL]))
    tag_block = checked - draw(st.integers(0, 6)) if rules.required is None else None
    return History(rules, mode, payments, rows, transfers, orphan, start, end, checked, tag_block)


def owner_of(payments: Sequence[Payment], row: StoredRow) -> Payment:
    (found,) = [p for p in payments if p.id == row.owner]
    return found


def stored_credits(rows: Mapping[Key, StoredRow]) -> dict[UUID, list[Credit]]:
    out: dict[UUID, list[Credit]] = defaultdict(list)
    for row in rows.values():
        out[row.owner].append(row.loaded())
    return out


def final_counted_total(credits: Iterable[Credit]) -> Settled:
    """The final counted credits, summed: value, count, first and last block."""
    return NOTHING.plus(c for c in credits if c.final and c.counted)


def history_input(
    history: History,
    credits: Mapping[UUID, Sequence[Credit]],
    settled: Mapping[UUID, Settled] | None = None,
) -> RangeInput:
    """The range of ``history`` as loaded with ``credits`` (and ``settled``)."""
    return range_input(
        history.rules,
        history.mode,
        history.payments,
        credits,
        start=history.start,
        end=history.end,
        checked=history.checked,
        tag_block=history.tag_block,
        transfers=history.transfers,
        orphan=history.orphan,
        settled=settled,
    )


@SETTINGS
@given(histories())
def test_a_range_plans_the_same_with_final_credits_settled(history: History) -> None:
    every = stored_credits(history.rows)
    whole = whole_payments(history.rows, history.transfers, history.orphan)
    partial: dict[UUID, list[Credit]] = {}
    settled: dict[UUID, Settled] = {}
    for p in history.payments:
        credits = every.get(p.id, [])
        if p.id in whole:
            partial[p.id] = credits
            continue
        partial[p.id] = [c for c in credits if not c.final and not c.orphaned]  # 'pending'
        rest = final_counted_total(credits)
        if rest != NOTHING:
            settled[p.id] = rest
    full = plan_range(history_input(history, every))
    part = plan_range(history_input(history, partial, settled))
    assert_same_plan(full, part)
    touched = {u.id for u in full.payments}
    event(f"settled payments updated: {min(len(touched & settled.keys()), 2)}")
    # the totals written back are every counted credit, as the full load has them
    for update in full.payments:
        after = {**{c.key: c for c in every.get(update.id, [])}}
        after.update({r.credit.key: r.credit for r in full.credits if r.payment_id == update.id})
        for r in full.credits:  # a credit that moved to another payment is no longer this one's
            if r.payment_id != update.id:
                after.pop(r.credit.key, None)
        assert update.totals == NOTHING.plus(c for c in after.values() if c.counted)


@SETTINGS
@given(histories(), st.integers(1, 4))
def test_a_range_planned_in_steps_makes_its_events_in_order_and_the_same_plan(
    history: History, step: int
) -> None:
    """The steps a writer stores the events of while the rest is planned: the steps' outbox
    rows, one after the other, are the whole plan's outbox (an event is never taken back), and
    the plan they end in is the one planned at once."""
    inp = history_input(history, stored_credits(history.rows))
    whole = plan_range(inp)
    steps = plan_steps(inp, step)
    streamed: list[Any] = []
    while True:
        try:
            streamed += next(steps)
        except StopIteration as done:
            plan = done.value
            break
    assert streamed == list(whole.outbox)
    assert_same_plan(whole, plan)
    assert plan == whole
    event(f"rows of the outbox: {min(len(streamed), 3)}")


# --- 2. ranges after ranges, the store kept as the scanner keeps it ----------------------------


@dataclass
class Store:
    """``payments`` (the statuses), ``transactions``, ``payment_sums`` and the events."""

    payments: dict[UUID, Payment]
    rows: dict[Key, StoredRow] = field(default_factory=dict)
    sums: dict[UUID, Settled] = field(default_factory=dict)
    events: list[object] = field(default_factory=list)

    def load(
        self,
        rules: Rules,
        mode: Mode,
        start: int,
        end: int,
        checked: int,
        tag_block: int | None,
        transfers: Sequence[Transfer],
        orphan: Sequence[Key],
    ) -> Loads:
        """Every credit (the reference), and what ``load._credits`` reads: for a payment with a
        ``payment_sums`` row and no transfer or orphan of the range, its 'pending' rows and
        ``settled_of`` its stored totals."""
        every = stored_credits(self.rows)
        whole = whole_payments(self.rows, transfers, orphan)
        partial: dict[UUID, list[Credit]] = {}
        settled: dict[UUID, Settled] = {}
        for payment_id in self.payments:
            credits = every.get(payment_id, [])
            total = self.sums.get(payment_id)
            if total is None or payment_id in whole or not mode.settles:
                partial[payment_id] = credits
                continue
            pending = [
                row.loaded()
                for row in self.rows.values()
                if row.owner == payment_id and row.status == "pending"
            ]
            left = settled_of(total, pending)
            assert left is not None, "the stored totals always add up"
            partial[payment_id] = pending
            if left != NOTHING:
                settled[payment_id] = left
        common: dict[str, Any] = dict(
            start=start,
            end=end,
            checked=checked,
            tag_block=tag_block,
            transfers=transfers,
            orphan=orphan,
        )
        payments = list(self.payments.values())
        return Loads(
            range_input(rules, mode, payments, every, **common),
            range_input(rules, mode, payments, partial, settled=settled, **common),
        )

    def commit(self, plan: RangePlan) -> None:
        """What ``persist.write_plan`` writes: credit rows, payment statuses, ``payment_sums``
        (``sums.write``), events, then ``count_confirmations``."""
        for r in plan.credits:
            old = self.rows.get(r.credit.key)
            verified = old.verified_hash if old is not None else None
            self.rows[r.credit.key] = StoredRow(r.payment_id, r.credit, r.status, verified)
        for u in plan.payments:
            self.payments[u.id] = replace(self.payments[u.id], status=u.status)
            self.sums[u.id] = u.totals
        self.events.extend(plan.events)
        f = plan.finality
        for row in self.rows.values():
            c = row.loaded()
            if row.status == "pending" and credit_final(c.block_number, c.verified, f):
                row.status = "confirmed"

    def verify(self, keys: Iterable[Key]) -> None:
        """A second provider agreed with these rows (``verified_hash`` set to their block's)."""
        for key in keys:
            if key in self.rows:
                self.rows[key].verified_hash = self.rows[key].credit.block_hash


@dataclass(frozen=True)
class Step:
    start: int
    end: int
    lag: int  # checked = end + lag (a backfill's cursor is ahead of its range)
    tag_lag: int  # tag mode: the tag's block is this far below checked
    orphan: tuple[int, ...]  # indexes into the stored keys
    verify: tuple[int, ...]
    mode: Mode


@dataclass(frozen=True)
class Run:
    rules: Rules
    payments: list[Payment]
    transfers: list[Transfer]
    steps: list[Step]


@st.composite
def runs(draw: st.DrawFn) -> Run:
    rules = draw(rules_strategy)
    blocks = draw(st.integers(6, 30))
    payments = []
    for n in range(1, draw(st.integers(1, 4)) + 1):
        created = ts(draw(st.integers(0, blocks // 2))) + draw(st.sampled_from([-25, 0, 19]))
        lifetime = draw(st.sampled_from([30, 150, 10_000]))
        payments.append(
            Payment(
                id=pid(n),
                token=TOKEN,
                address=draw(st.sampled_from(ADDRESSES)),
                amount=draw(st.integers(1, 25)),
                status="pending",
                created_at=created,
                expires_at=created + lifetime,
            )
        )
    raw = draw(
        st.lists(
            st.tuples(
                st.integers(1, blocks),
                st.integers(1, 6),
                st.sampled_from(ADDRESSES),
                st.integers(0, 3),  # > 0: the same transaction re-mined that many blocks later
            ),
            min_size=1,
            max_size=16,
        )
    )
    transfers = []
    per_block: dict[int, int] = defaultdict(int)
    for n, (block, value, to, again) in enumerate(sorted(raw, key=lambda r: r[0]), start=1):
        t = transfer(n, block, value, log_index=per_block[block], to=to)
        per_block[block] += 1
        transfers.append(t)
        if again and block + again <= blocks:
            at = block + again
            transfers.append(
                replace(
                    t,
                    block_number=at,
                    block_hash=block_hash(at, variant=again),
                    block_timestamp=ts(at),
                )
            )
    steps = []
    at = 1
    while at <= blocks:  # forward, cut at random; now and then a range read again
        end = min(blocks, at + draw(st.integers(0, 5)))
        steps.append(step(draw, at, end))
        if draw(st.integers(0, 4)) == 0:
            again = draw(st.integers(1, end))
            steps.append(step(draw, again, min(end, again + draw(st.integers(0, 4)))))
        at = end + 1
    for _ in range(draw(st.integers(0, 3))):  # past the transfers: things get final
        end = blocks + draw(st.integers(1, 8))
        steps.append(step(draw, end, end))
    return Run(rules, payments, transfers, steps)


def step(draw: st.DrawFn, start: int, end: int) -> Step:
    return Step(
        start,
        end,
        draw(st.sampled_from([0, 0, 0, 1, 3])),
        draw(st.integers(0, 5)),
        tuple(draw(st.lists(st.integers(0, 40), max_size=2)))
        if draw(st.integers(0, 5)) == 0
        else (),
        tuple(draw(st.lists(st.integers(0, 40), max_size=4))),
        draw(st.sampled_from([LIVE, LIVE, BACKFILL])),
    )


@SETTINGS
@given(runs())
def test_ranges_after_ranges_plan_the_same_with_the_stored_totals(run: Run) -> None:
    store = Store({p.id: p for p in run.payments})
    settled_used = 0
    for s in run.steps:
        keys = sorted(store.rows)
        if keys and run.rules.verify:
            store.verify(keys[i % len(keys)] for i in s.verify)
        orphan = [keys[i % len(keys)] for i in s.orphan] if keys else []
        transfers = [t for t in run.transfers if s.start <= t.block_number <= s.end]
        checked = s.end + s.lag
        loads = store.load(
            run.rules,
            s.mode,
            s.start,
            s.end,
            checked,
            checked - s.tag_lag,
            transfers,
            list(dict.fromkeys(orphan)),
        )
        full = plan_range(loads.full)
        settled_used += len(loads.partial.settled.keys() & {u.id for u in full.payments})
        assert_same_plan(full, plan_range(loads.partial))
        store.commit(full)
        # payment_sums is every counted credit of the payment, whenever it was written
        every = stored_credits(store.rows)
        for payment_id, total in store.sums.items():
            assert total == NOTHING.plus(c for c in every.get(payment_id, []) if c.counted)
        for payment_id, credits in every.items():  # and a payment with credits has a row
            assert payment_id in store.sums or not any(c.counted for c in credits)
    event(f"settled payments updated: {min(settled_used, 5)}")
