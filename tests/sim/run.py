"""One schedule from start to verdict: build the world, run the steps, end the faults, let the
scanner reach the head, read the final chain and the gateway's rows, and check the database and
the event stream against them (:mod:`tests.sim.check`)."""

from __future__ import annotations

import random
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import tests.sim.disrupt
import tests.sim.steps  # noqa: F401
from scanner.db.engine import engine_for_url
from tests.sim.check import check_all
from tests.sim.oracle import FinalChain
from tests.sim.schedule import Schedule
from tests.sim.world import (
    CONFIRMATIONS,
    MAX_REORG_DEPTH,
    World,
    build,
    cursor,
    cursor_at_head,
    swept,
)
from tests.support.wait import until

# The bound for the cursor to be back at the head once faults stop: the scanner's longest pause
# after failures (its backoff doubles up to 60 s), then a generous rate for the blocks it is
# behind (a long outage leaves hundreds; 2 cores shared with other work).
LONGEST_PAUSE = 60.0
SETTLE_MARGIN = 30.0
SECONDS_PER_BLOCK_BEHIND = 0.1
BACKFILL_BOUND = 60.0


@dataclass
class Result:
    seed: int
    steps: int
    injected: Counter[str]
    payments: int = 0
    events: int = 0
    transactions: int = 0
    reorgs: int = 0
    streamed: bool = False  # its processes stored each range's events as the plan made them
    unscanned: bool = False  # backfilled before the first ``scanner run`` ever ran
    catch_up_seconds: float = 0.0
    behind: int = 0  # blocks the cursor was behind the head when the faults stopped
    failures: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


async def run_schedule(
    seed: int,
    db_url: str,
    workdir: Path,
    kinds: frozenset[str],
    *,
    seconds: float,
    steps: int | None = None,
) -> Result:
    """Run the schedule of ``seed`` for ``seconds`` (or exactly ``steps`` steps)."""
    engine = engine_for_url(db_url)
    # half the schedules walk the path a range of thousands of transfers takes (drawn apart
    # from the schedule's own randomness: a seed's steps are the same either way)
    streamed = random.Random(f"streamed {seed}").random() < 0.5
    # a third begin on a database no live scan has seen (drawn apart too)
    opening = random.Random(f"unscanned {seed}")
    unscanned = opening.random() < 0.3
    world = await build(workdir, db_url, engine, streamed=streamed, unscanned=unscanned)
    schedule = Schedule(world, random.Random(seed), kinds)
    if unscanned:
        begin_unscanned(schedule, opening)
    try:
        deadline = time.monotonic() + seconds
        while (schedule.step_no < steps) if steps is not None else (time.monotonic() < deadline):
            await schedule.step()
        result = Result(seed, schedule.step_no, schedule.injected, log=schedule.log)
        result.streamed, result.unscanned = streamed, unscanned
        if await settle(world, schedule, result):
            await verdict(world, result)
        return result
    finally:
        world.close()
        await engine.dispose()


def begin_unscanned(schedule: Schedule, rng: random.Random) -> None:
    """Payments made, paid, reorged and backfilled for 20 to 60 steps before the first
    ``scanner run`` starts; a few steps before it, a backfill of the whole chain so far
    (into the reorg window at times), which may still be running when the scan starts."""
    fleet = schedule.world.fleet
    steps = rng.randrange(20, 60)
    below_head = rng.randrange(0, MAX_REORG_DEPTH + 1)

    def backfill() -> None:
        end = schedule.world.chain.head() - below_head
        if not fleet.backfills() and schedule.world.proxy.proxy.frozen_at is None and end > 1:
            fleet.backfill(1, end, dry_run=False)
            schedule.note(f"backfill 1..{end} before the first scan")

    def first_run() -> None:
        if not fleet.runners():
            fleet.run()
            schedule.note("first scanner run")

    schedule.later(steps - rng.randrange(0, 6), backfill)
    schedule.later(steps, first_run)


async def settle(world: World, schedule: Schedule, result: Result) -> bool:
    """Faults stop; backfills end; the chain moves past the confirmations; one scanner runs
    and brings the cursor to the head within the bound (False: it did not)."""
    schedule.end_faults()
    fleet = world.fleet
    with suppress(AssertionError):  # backfills end on their own, within the bound
        await until(lambda: not fleet.backfills(), BACKFILL_BOUND, "backfills done", 0.2)
    for proc in fleet.backfills():  # those that did not
        result.failures.append(f"{proc.log.name}: not done {BACKFILL_BOUND} s on\n{proc.tail()}")
    if not fleet.runners():
        fleet.run()
    world.chain.mine(CONFIRMATIONS + 1)
    at_head = True
    try:
        behind = world.chain.head() - (await cursor(world.engine) or -1)
        bound = LONGEST_PAUSE + SETTLE_MARGIN + SECONDS_PER_BLOCK_BEHIND * behind
        result.behind = behind
        result.catch_up_seconds = await cursor_at_head(world, bound)
    except AssertionError as exc:
        result.failures.append(str(exc))
        at_head = False
    result.failures += fleet.stop_all()
    result.failures += fleet.problems()
    return at_head


async def verdict(world: World, result: Result) -> None:
    chain = world.chain
    tokens = list(world.tokens.values())
    rows = await world.gateway.final_rows()
    native = {r.address for r in rows if r.token is None}
    final = FinalChain(
        head=chain.head(),
        confirmations=CONFIRMATIONS,
        timestamps=chain.timestamps(),
        transfers=(*chain.token_transfers(tokens), *chain.native_transfers(native)),
        swept=await swept(world.engine),
    )
    checked = await check_all(world.engine, rows, final, chain.reorgs, world.gateway.status_edits)
    result.payments, result.events = checked.payments, checked.events
    result.transactions, result.reorgs = checked.transactions, len(chain.reorgs)
    result.failures += checked.failures
