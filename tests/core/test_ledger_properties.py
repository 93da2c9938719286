"""Property tests of the ledger: it always agrees with the from-scratch answer, and the events it
writes for a payment do not depend on how the blocks were cut into batches."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from scanner.core.ledger import Ledger, recompute
from scanner.core.model import Credit, Event, Finality, Payment, Status, Transfer
from scanner.core.plan import (
    BACKFILL,
    ChainRules,
    Holding,
    PaymentUpdate,
    RangeInput,
    RangePlan,
    plan_range,
)
from tests.core.builders import (
    ADDRESS,
    OTHER_ADDRESS,
    TIMESTAMPS,
    TOKEN,
    block_hash,
    fin,
    pid,
    transfer,
    ts,
)

GRACE = 20  # shorter than the default, so that the created-at cut-off matters on a toy chain
SETTINGS = settings(derandomize=True, deadline=None, max_examples=300)


@dataclass(frozen=True)
class Scenario:
    payments: list[Payment]
    transfers: list[Transfer]  # in (block_number, log_index) order
    blocks: int
    required: int


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    blocks = draw(st.integers(4, 30))
    payments = []
    for n in range(1, draw(st.integers(1, 5)) + 1):
        created = ts(draw(st.integers(0, blocks))) + draw(st.sampled_from([-25, -1, 0, 7, 19]))
        lifetime = draw(st.sampled_from([0, 12, 30, 60, 150, 1000]))
        payments.append(
            Payment(
                id=pid(n),
                token=TOKEN,
                address=draw(st.sampled_from([ADDRESS, ADDRESS, OTHER_ADDRESS])),
                amount=draw(st.integers(1, 6)),
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
                st.sampled_from([ADDRESS, ADDRESS, OTHER_ADDRESS]),
            ),
            max_size=14,
        )
    )
    transfers = []
    per_block: dict[int, int] = defaultdict(int)
    for n, (block, value, to) in enumerate(sorted(raw, key=lambda r: r[0]), start=1):
        transfers.append(transfer(n, block, value, log_index=per_block[block], to=to))
        per_block[block] += 1
    return Scenario(payments, transfers, blocks, draw(st.integers(1, 4)))


def candidates(payments: Sequence[Payment], t: Transfer) -> list[UUID]:
    return [p.id for p in payments if (p.token, p.address) == (t.token, t.to_address)]


# --- 1. whatever happens, the ledger agrees with the from-scratch answer ---------------------


def oracle_status(p: Payment, credits: Sequence[Credit], f: Finality | None) -> Status:
    """docs/design.md's states, written out again independently of the ledger's code."""
    counted = [c for c in credits if not c.orphaned and not c.late]
    if sum(c.value for c in counted) >= p.amount:
        if f is not None and all(c.block_number <= f.final_block for c in counted):
            return "confirmed"
        return "confirming"
    if f is not None and f.final_timestamp is not None and f.final_timestamp > p.expires_at:
        return "expired"
    return "pending"


operations = st.lists(
    st.one_of(
        st.tuples(st.just("apply"), st.integers(0, 13), st.integers(0, 2)),
        st.tuples(st.just("orphan"), st.integers(0, 13), st.just(0)),
        st.tuples(st.just("advance"), st.integers(0, 40), st.just(0)),
    ),
    max_size=40,
)


@SETTINGS
@given(scenarios(), operations)
def test_ledger_agrees_with_recompute(scenario: Scenario, ops: list[tuple[str, int, int]]) -> None:
    ledger = Ledger(scenario.payments, {}, GRACE)
    known: set[tuple[str, int]] = set()
    live: set[tuple[str, int]] = set()
    for op, index, extra in ops:
        if not scenario.transfers:
            break
        base = scenario.transfers[index % len(scenario.transfers)]
        if op == "apply":  # extra > 0: the same transaction re-mined in a later, other block
            t = replace(
                base,
                block_number=base.block_number + extra,
                block_hash=block_hash(base.block_number + extra, variant=extra),
                block_timestamp=ts(base.block_number + extra),
            )
            # A later block only adds candidates, so None here means "already credited there".
            if ledger.apply(t, candidates(scenario.payments, t)) is not None:
                known.add(t.key)
                live.add(t.key)
        elif op == "orphan" and base.key in known:
            ledger.orphan([base.key])
            live.discard(base.key)
        elif op == "advance":
            ledger.advance(fin(index, scenario.required))
    check_state(ledger, scenario.payments, known, live)


def check_state(
    ledger: Ledger,
    payments: Sequence[Payment],
    known: set[tuple[str, int]],
    live: set[tuple[str, int]],
) -> None:
    finality = ledger.finality
    owners: dict[tuple[str, int], UUID] = {}
    for p in payments:
        credits = ledger.payment_credits(p.id)
        outcome = ledger.outcome(p.id)
        for c in credits:
            assert c.key not in owners, "one row per key"
            owners[c.key] = p.id
            assert c.late == (c.block_timestamp > p.expires_at)
        if outcome.status not in ("confirmed", "expired"):
            assert outcome.status == oracle_status(p, credits, finality)
        if finality is not None:
            assert outcome == recompute(replace(p, status=outcome.status), credits, finality)
            if outcome.status not in ("confirmed", "expired"):
                assert outcome == recompute(p, credits, finality)  # from the initial status
        counted = [c for c in credits if c.counted]
        assert outcome.amount_received == sum(c.value for c in counted)
        assert replay_status(ledger.events(), p.id) == outcome.status
    assert set(owners) == known
    assert {
        key for key, owner in owners.items() if not _credit(ledger, owner, key).orphaned
    } == live
    for key, (owner, credit) in ledger.credits().items():
        assert owners[key] == owner and _credit(ledger, owner, key) == credit


def _credit(ledger: Ledger, owner: UUID, key: tuple[str, int]) -> Credit:
    (credit,) = [c for c in ledger.payment_credits(owner) if c.key == key]
    return credit


def replay_status(events: Sequence[Event], payment_id: UUID) -> Status:
    """Walk the payment's status_changed events: each starts where the previous one ended."""
    status: Status = "pending"
    for event in events:
        if event.payment_id == payment_id and event.type == "status_changed":
            assert event.status_from == status
            assert event.status_to is not None
            status = event.status_to
    return status


# --- 2. the batch boundaries do not change the events ----------------------------------------


@dataclass
class Database:
    """What the scanner stores between batches: payment rows, transactions rows, events."""

    payments: dict[UUID, Payment]
    rows: dict[tuple[str, int], tuple[UUID, Credit]]
    outcomes: dict[UUID, PaymentUpdate]
    events: list[Event]

    def load(self, scenario: Scenario, start: int, end: int) -> RangeInput:
        """What scan/load.py would hand the plan for blocks ``start..end``."""
        credits: dict[UUID, list[Credit]] = defaultdict(list)
        for owner, credit in self.rows.values():
            credits[owner].append(credit)
        rules = ChainRules("toy", scenario.required, None, GRACE, reorg_depth=64)
        return RangeInput(
            rules=rules,
            mode=BACKFILL,
            start=start,
            end=end,
            checked=end,
            tag_block=None,
            timestamps=TIMESTAMPS,
            headers=(),
            transfers=tuple(t for t in scenario.transfers if start <= t.block_number <= end),
            holdings=tuple(Holding(p, None, 0) for p in self.payments.values()),
            credits={pid: tuple(found) for pid, found in credits.items()},
        )

    def commit(self, plan: RangePlan) -> None:
        for update in plan.payments:
            self.payments[update.id] = replace(self.payments[update.id], status=update.status)
            self.outcomes[update.id] = update
        self.rows.update((row.credit.key, (row.payment_id, row.credit)) for row in plan.credits)
        self.events.extend(plan.events)


def scan(scenario: Scenario, batches: Sequence[tuple[int, int]]) -> Database:
    """Scan the scenario's blocks batch by batch through the production plan step (one plan,
    one transaction, per batch)."""
    db = Database({p.id: p for p in scenario.payments}, {}, {}, [])
    for start, end in batches:
        db.commit(plan_range(db.load(scenario, start, end)))
    return db


def per_payment(events: Sequence[Event]) -> dict[UUID, list[Event]]:
    out: dict[UUID, list[Event]] = defaultdict(list)
    for event in events:
        out[event.payment_id].append(event)
    return dict(out)


def cut(blocks: int, cuts: set[int]) -> list[tuple[int, int]]:
    edges = sorted(c for c in cuts if 1 <= c < blocks)
    starts = [1, *(c + 1 for c in edges)]
    ends = [*edges, blocks]
    return list(zip(starts, ends, strict=True))


@SETTINGS
@given(scenarios(), st.sets(st.integers(1, 40)), st.integers(0, 12))
def test_batch_boundaries_do_not_change_the_events(
    scenario: Scenario, cuts: set[int], tail: int
) -> None:
    last = scenario.blocks + tail  # scan on past the last transfer, so that things get final
    one_by_one = scan(scenario, [(b, b) for b in range(1, last + 1)])
    in_batches = scan(scenario, cut(last, cuts))
    all_at_once = scan(scenario, [(1, last)])
    reference = per_payment(one_by_one.events)
    assert per_payment(in_batches.events) == reference
    assert per_payment(all_at_once.events) == reference
    assert in_batches.rows == one_by_one.rows == all_at_once.rows
    final = {p: db_outcome(one_by_one, p) for p in one_by_one.payments}
    assert {p: db_outcome(in_batches, p) for p in in_batches.payments} == final
    assert {p: db_outcome(all_at_once, p) for p in all_at_once.payments} == final


def db_outcome(db: Database, payment_id: UUID) -> tuple[str, int, int | None]:
    outcome = db.outcomes.get(payment_id)
    status = db.payments[payment_id].status
    if outcome is None:
        return (status, 0, None)
    assert outcome.status == status
    return (status, int(outcome.amount_received), outcome.detected_in_block)


@SETTINGS
@given(scenarios())
def test_every_transfer_to_a_known_address_is_credited_exactly_once(scenario: Scenario) -> None:
    db = scan(scenario, [(1, scenario.blocks)])
    for t in scenario.transfers:
        eligible = [
            p
            for p in scenario.payments
            if p.address == t.to_address and p.created_at <= t.block_timestamp + GRACE
        ]
        assert (t.key in db.rows) == bool(eligible)
    detected = [e for e in db.events if e.type == "transfer_detected"]
    assert len(detected) == len(db.rows)
