"""The live scan against the raw read limit.

Anvil with 1,000 blocks x 20 Transfer logs (20,000 logs to 5,000 recipients). In one run, for
each ``--match`` fraction: raw ``eth_getLogs`` over the range (100-block ranges, 8 concurrent,
orjson; the median of ``--raw-repeats``), then a fresh database with the payments, then
``ChainScanner.scan_until_head()`` from the range's first block, with the product's defaults
(batch size, concurrency, logging at info into /dev/null, metrics on) unless overridden.

    python -m bench.scan_vs_raw                 # --match 0.01
    python -m bench.scan_vs_raw --match 0.01 1.0

Figures are printed, never judged: the exit status is 0 whatever they are.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from bench import common
from bench.chain import BenchChain
from scanner.scan.live import ChainScanner
from scanner.scan.parts import ChainParts


@dataclass
class Outcome:
    match: float
    payments: int
    raw: common.RawRead
    seconds: float
    logs: int
    counts: dict[str, int]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return common.parse_bench_args(
        argv,
        __doc__.split("\n\n")[0],
        blocks=1_000,
        profile_help="write a cProfile of the scan to PATH (one file per --match: "
        "PATH.<match>); slows the scan down",
    )


async def run_one(chain: BenchChain, match: float, args: argparse.Namespace, work: Path) -> Outcome:
    end = chain.head
    async with common.match_setup(chain, match, args, work) as setup:
        scanner = ChainScanner(
            ChainParts(setup.settings, setup.reader, setup.db.sessions, metrics=setup.metrics)
        )
        await scanner.prepare()
        outcome, seconds = await common.measure(scanner.scan_until_head, args, match)
        if outcome.cursor != end:
            print(f"WARNING: the scan stopped at {outcome.cursor}, not at the head {end}")
        counts = await setup.db.counts()
    return Outcome(match, setup.payments, setup.raw, seconds, chain.shape.logs, counts)


def report(chain: BenchChain, outcomes: list[Outcome], args: argparse.Namespace) -> None:
    shape = chain.shape
    blocks = chain.head - chain.first_block + 1
    rows = []
    for o in outcomes:
        credited = o.counts["transactions"]
        speed = (o.logs / o.seconds) / o.raw.rate if o.seconds > 0 and o.raw.rate > 0 else 0.0
        rows.append(
            [
                f"{o.match:g}",
                f"{o.payments:,}",
                f"{o.raw.seconds:.3f}",
                common.rate(o.raw.logs, o.raw.seconds),
                f"{o.seconds:.3f}",
                common.rate(o.logs, o.seconds),
                common.rate(credited, o.seconds),
                f"{o.seconds / o.raw.seconds:.1f}x" if o.raw.seconds > 0 else "-",
                f"{speed:.2f}",
            ]
        )
    common.print_table(
        f"Live scan vs raw eth_getLogs: {blocks:,} blocks, {shape.logs:,} Transfer logs to "
        f"{shape.recipients:,} recipients, {args.db}",
        [
            "match",
            "payments",
            "raw s",
            "raw logs/s",
            "scan s",
            "scan logs/s",
            "credited/s",
            "scan/raw time",
            "speed vs raw",
        ],
        rows,
    )
    for o in outcomes:
        expected = o.payments
        c = o.counts
        note = "" if c["transactions"] == expected else f"  WARNING: expected {expected:,} credits"
        print(
            f"match {o.match:g}: {c['transactions']:,} credited transfers, {c['events']:,} events,"
            f" {c['confirmed']:,} confirmed + {c['confirming']:,} confirming payments;"
            f" raw read saw {o.raw.logs:,} logs{note}"
        )
    common.print_targets()


def main(argv: list[str] | None = None) -> int:
    return common.run_bench(parse_args(argv), run_one, report)


if __name__ == "__main__":
    raise SystemExit(main())
