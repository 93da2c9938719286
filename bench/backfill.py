"""The backfill against the raw read limit.

Anvil with 5,000 blocks x 20 Transfer logs (100,000 logs to 5,000 recipients). In one run, for
each ``--match`` fraction: raw ``eth_getLogs`` over the range (100-block ranges, 8 concurrent,
orjson; the median of ``--raw-repeats``), then a fresh database with the payments, then
``Backfill.run(first, head)`` over the whole range, with the product's defaults (batch size,
concurrency, logging at info into /dev/null, metrics on) unless overridden.

    python -m bench.backfill                    # --match 0.01
    python -m bench.backfill --match 0.01 1.0
    python -m bench.backfill --book 10000       # beside 10,000 other open payments: logs read whole
    python -m bench.backfill --book 10000 --rounds 3  # three rounds; the median of their ratios

``--deposit`` (one long-lived payment per watched recipient) also measures, in the same run,
the write floor (:mod:`bench.floor`): the database alone writing exactly the rows this backfill
wrote, into a fresh database of the same kind, and prints the backfill's time against it.

``--book N`` writes N other open payments beside the paid ones (unpaid, at addresses no transfer
pays, as a gateway writes them): with more addresses than ``filter_recipients_max`` the node is
asked for every Transfer of the token, as a real shop's book makes it.

``--rounds R`` measures each ``--match`` R times, one round after the other (each round its own
raw read, fresh database, backfill and, with ``--deposit``, floor), prints every round, then the
median of the rounds' ratios: the machine's speed moves from one minute to the next, and a slow
spell that falls on one side of one ratio falls on both sides of the median more often.

Figures are printed, never judged: the exit status is 0 whatever they are.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench import common
from bench.chain import BenchChain
from bench.cpu import Sample, describe, sample
from bench.database import watched_recipients
from bench.floor import Floor, floor_of, print_floor
from scanner.scan.backfill import Backfill, BackfillSummary
from scanner.scan.parts import ChainParts


@dataclass
class Outcome:
    match: float
    payments: int
    raw: common.RawRead
    raw_aiohttp: common.RawRead
    seconds: float
    cpu: float  # the process's CPU seconds (every thread) during the backfill
    parts: Sample  # and the event loop's, the other threads', PostgreSQL's
    summary: BackfillSummary
    counts: dict[str, int]
    raw_cpu: Sample | None = None  # one raw read's
    floor: Floor | None = None  # --deposit: the database alone writing the same rows
    floor_expected: dict[str, int] | None = None  # the backfill's rows, to compare with it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return common.parse_bench_args(
        argv,
        __doc__.split("\n\n")[0],
        blocks=5_000,
        profile_help="write a cProfile of the backfill to PATH (one file per --match: "
        "PATH.<match>, the last round's); slows it down",
        rounds=True,
    )


async def run_rounds(
    chain: BenchChain, match: float, args: argparse.Namespace, work: Path
) -> list[Outcome]:
    """``--rounds`` measurements of one ``--match``, one after the other."""
    return [await run_one(chain, match, args, work) for _ in range(max(1, args.rounds))]


async def run_one(chain: BenchChain, match: float, args: argparse.Namespace, work: Path) -> Outcome:
    start, end = chain.first_block, chain.head
    async with common.match_setup(chain, match, args, work) as setup:
        job = Backfill(
            ChainParts(setup.settings, setup.reader, setup.db.sessions, metrics=setup.metrics)
        )
        used, before = time.process_time(), sample()
        summary, seconds = await common.measure(lambda: job.run(start, end), args, match)
        used, parts = time.process_time() - used, sample() - before
        counts = await setup.db.counts()
        floor, expected = None, None
        if args.deposit:
            floor, expected = await floor_of(setup.db, work, args.pg_url)
    return Outcome(
        match,
        setup.payments,
        setup.raw,
        setup.raw_aiohttp,
        seconds,
        used,
        parts,
        summary,
        counts,
        setup.raw_cpu,
        floor,
        expected,
    )


def speed(o: Outcome, raw: common.RawRead | None = None) -> float:
    """The same blocks of the same node: the raw read's time (``raw``, default the httpx one)
    over the backfill's (the backfill may ask the node for fewer logs: a recipient filter,
    docs/operations.md)."""
    return (raw or o.raw).seconds / o.seconds if o.seconds > 0 else 0.0


def floor_ratio(o: Outcome) -> float | None:
    """``--deposit``: the floor's time over the backfill's."""
    if o.floor is None or o.seconds <= 0:
        return None
    return o.floor.total / o.seconds


def report(chain: BenchChain, rounds: list[list[Outcome]], args: argparse.Namespace) -> None:
    several = len(rounds[0]) > 1
    outcomes = [o for runs in rounds for o in runs]
    numbers = [n for runs in rounds for n in range(1, len(runs) + 1)]
    labels = [
        f"match {o.match:g}" + (f" round {n}" if several else "")
        for o, n in zip(outcomes, numbers, strict=True)
    ]
    print_outcomes(chain, outcomes, numbers if several else None, args)
    for o, label in zip(outcomes, labels, strict=True):
        print_details(chain, o, label, args)
    for o, label in zip(outcomes, labels, strict=True):
        if o.floor is not None and o.floor_expected is not None:
            report_floor(o, args.db, label)
    if several:
        print()
        for runs in rounds:
            match = f"match {runs[0].match:g}"
            print(f"{match}: {median_line('speed vs raw', [speed(o) for o in runs])}")
            floors = [r for r in map(floor_ratio, runs) if r is not None]
            if floors:
                print(f"{match}: {median_line('backfill vs its floor', floors)}")
    common.print_targets()
    if args.deposit:
        print(
            f"deposit workload: backfill >= {TARGET_FLOOR}x the write floor (floor s / backfill"
            " s), the floor measured in the same run"
        )


def print_outcomes(
    chain: BenchChain, outcomes: list[Outcome], rounds: list[int] | None, args: argparse.Namespace
) -> None:
    """The table: a row per outcome (with its round's number, when given)."""
    header = [
        "match",
        "payments",
        "book",
        "raw s",
        "raw logs/s",
        "backfill s",
        "CPU s",
        "blocks/s",
        "chain logs/s",
        "logs read",
        "credited/s",
        "speed vs raw",
        "raw aiohttp s",
        "vs raw aiohttp",
    ]
    rows = []
    for o in outcomes:
        s = o.summary
        rows.append(
            [
                f"{o.match:g}",
                f"{o.payments:,}",
                f"{args.book:,}",
                f"{o.raw.seconds:.3f}",
                common.rate(o.raw.logs, o.raw.seconds),
                f"{o.seconds:.2f}",
                f"{o.cpu:.2f}",
                common.rate(s.blocks, o.seconds),
                common.rate(o.raw.logs, o.seconds),
                f"{s.logs:,}",
                common.rate(s.matched, o.seconds),
                f"{speed(o):.2f}",
                f"{o.raw_aiohttp.seconds:.3f}",
                f"{speed(o, o.raw_aiohttp):.2f}",
            ]
        )
    if rounds is not None:
        header.insert(1, "round")
        for row, number in zip(rows, rounds, strict=True):
            row.insert(1, str(number))
    shape, blocks = chain.shape, chain.head - chain.first_block + 1
    common.print_table(
        f"Backfill vs raw eth_getLogs: {blocks:,} blocks, {shape.logs:,} Transfer logs to "
        f"{shape.recipients:,} recipients, {args.db}",
        header,
        rows,
    )


def print_details(chain: BenchChain, o: Outcome, label: str, args: argparse.Namespace) -> None:
    """What one outcome wrote, and where its CPU went (and one raw read's)."""
    shape, s, c = chain.shape, o.summary, o.counts
    credited = o.payments
    if args.deposit:  # every log to a watched recipient (each receives as many)
        watched = sum(watched_recipients(shape.recipients, o.match))
        credited = watched * shape.logs // shape.recipients
    note = "" if c["transactions"] == credited else f"  WARNING: expected {credited:,}"
    print(
        f"{label}: {s.blocks:,} blocks, {s.logs:,} logs read, {s.matched:,} matched,"
        f" {s.payments_changed:,} payments changed, {s.events:,} events;"
        f" {c['transactions']:,} transaction rows, {c['confirmed']:,} confirmed +"
        f" {c['confirming']:,} confirming payments; raw read saw {o.raw.logs:,} logs{note}"
    )
    where = describe(o.parts, o.seconds, postgres=args.db == "postgresql")
    print(f"{label}: backfill {where}")
    if o.raw_cpu is not None:
        raw = describe(o.raw_cpu, o.raw.seconds, postgres=False)
        print(f"{label}: raw read (httpx, one run) {raw}")


TARGET_FLOOR = 0.8


def median_line(what: str, ratios: list[float]) -> str:
    """``what`` round by round, and their median."""
    each = ", ".join(f"{r:.2f}x" for r in ratios)
    return f"{what}, round by round: {each}; median {statistics.median(ratios):.2f}x"


def report_floor(o: Outcome, db: str, label: str) -> None:
    """The floor of the very rows this backfill wrote, beside it."""
    assert o.floor is not None and o.floor_expected is not None
    credits = o.counts["transactions"]
    print(f"\n{label}: the database alone writing the backfill's rows ({db}):\n")
    print_floor(o.floor, credits)
    same = all(o.floor.counts[k] == v for k, v in o.floor_expected.items())
    compared = ", ".join(
        f"{k} {o.floor.counts[k]:,} (backfill {v:,})" for k, v in o.floor_expected.items()
    )
    print(f"  rows written by the floor: {compared}{'' if same else '  WARNING: they differ'}")
    ratio = floor_ratio(o) or 0.0
    print(
        f"  backfill {o.seconds:.2f} s, floor {o.floor.total:.2f} s: backfill at {ratio:.2f}x"
        f" the floor (backfill time {1 / ratio if ratio else 0:.2f}x the floor's);"
        f" {credits / o.seconds:,.0f} vs {credits / o.floor.total:,.0f} credited/s"
    )


def main(argv: list[str] | None = None) -> int:
    return common.run_bench(parse_args(argv), run_rounds, report)


if __name__ == "__main__":
    raise SystemExit(main())
