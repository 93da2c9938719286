"""The backfill against the raw read limit (issue 4's benchmark).

Anvil with 5,000 blocks x 20 Transfer logs (100,000 logs to 5,000 recipients). In one run, for
each ``--match`` fraction: raw ``eth_getLogs`` over the range (100-block ranges, 8 concurrent,
orjson; the median of ``--raw-repeats``), then a fresh database with the payments, then
``Backfill.run(first, head)`` over the whole range, with the product's defaults (batch size,
concurrency, logging at info into /dev/null, metrics on) unless overridden.

    python -m bench.backfill                    # --match 0.01
    python -m bench.backfill --match 0.01 1.0

Figures are printed, never judged: the exit status is 0 whatever they are.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench import common, phases
from scanner.app import make_reader
from scanner.observe.metrics import Metrics
from scanner.runtime import tune_gc
from scanner.scan.backfill import Backfill, BackfillSummary

TARGET_SPEED = 0.8  # x the raw limit, when 1% of logs pay a payment
TARGET_CREDITED = 50_000  # credited transfers/s, when every log pays one


@dataclass
class Outcome:
    match: float
    payments: int
    raw: common.RawRead
    seconds: float
    summary: BackfillSummary
    counts: dict[str, int]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--match",
        type=float,
        nargs="+",
        default=[0.01],
        help="fractions of the logs that pay a payment (default 0.01)",
    )
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--pg-url",
        default=common.DEFAULT_PG_ADMIN,
        help="PostgreSQL server URL allowed to create databases",
    )
    parser.add_argument("--blocks", type=int, default=5_000)
    parser.add_argument("--per-block", type=int, default=20)
    parser.add_argument("--recipients", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the product's")
    parser.add_argument("--concurrency", type=int, default=None, help="default: the product's")
    parser.add_argument("--raw-repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=common.DEFAULT_CACHE)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached chain")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--log-file", default=None, help="scanner log lines (default /dev/null)")
    parser.add_argument(
        "--no-gc-tuning",
        action="store_true",
        help="keep CPython's GC defaults (the scanner's run and backfill commands tune them)",
    )
    parser.add_argument(
        "--phases", action="store_true", help="print wall-clock time per phase (bench/phases.py)"
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="write a cProfile of the backfill to PATH (one file per --match: "
        "PATH.<match>); slows it down",
    )
    return parser.parse_args(argv)


async def run_one(
    chain: common.BenchChain, match: float, args: argparse.Namespace, work: Path
) -> Outcome:
    start, end = chain.first_block, chain.head
    raw, _ = await common.raw_median(chain.url, chain.token, start, end, args.raw_repeats)
    db = await common.fresh_database(args.db, work, args.pg_url)
    reader = None
    try:
        payments = await common.insert_payments(
            db,
            chain,
            match,
            created_at=chain.block_timestamp(start - 1),
            seen_at_block=start - 1,
        )
        settings = common.chain_settings(
            chain, batch_size=args.batch_size, concurrency=args.concurrency
        )
        metrics = Metrics()
        reader = make_reader(settings, metrics)
        job = Backfill(settings, reader, db.sessions, metrics=metrics)
        profile = cProfile.Profile() if args.profile else None
        phases.reset()
        cpu = time.process_time()
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        summary = await job.run(start, end)
        seconds = time.perf_counter() - started
        if profile is not None:
            profile.disable()
            profile.dump_stats(f"{args.profile}.{match:g}")
        if args.phases:
            phases.report(seconds, time.process_time() - cpu, f"backfill phases, match {match:g}")
        counts = await db.counts()
    finally:
        if reader is not None:
            await reader.client.aclose()
        await db.close()
    return Outcome(match, payments, raw, seconds, summary, counts)


def report(chain: common.BenchChain, outcomes: list[Outcome], args: argparse.Namespace) -> None:
    shape = chain.shape
    rows = []
    for o in outcomes:
        s = o.summary
        speed = (s.logs / o.seconds) / o.raw.rate if o.seconds > 0 and o.raw.rate > 0 else 0.0
        rows.append(
            [
                f"{o.match:g}",
                f"{o.payments:,}",
                f"{o.raw.seconds:.3f}",
                common.rate(o.raw.logs, o.raw.seconds),
                f"{o.seconds:.2f}",
                common.rate(s.blocks, o.seconds),
                common.rate(s.logs, o.seconds),
                common.rate(s.matched, o.seconds),
                f"{speed:.2f}",
            ]
        )
    blocks = chain.head - chain.first_block + 1
    common.print_table(
        f"Backfill vs raw eth_getLogs: {blocks:,} blocks, {shape.logs:,} Transfer logs to "
        f"{shape.recipients:,} recipients, {args.db}",
        [
            "match",
            "payments",
            "raw s",
            "raw logs/s",
            "backfill s",
            "blocks/s",
            "logs/s",
            "credited/s",
            "speed vs raw",
        ],
        rows,
    )
    for o in outcomes:
        s, c = o.summary, o.counts
        note = "" if c["transactions"] == o.payments else f"  WARNING: expected {o.payments:,}"
        print(
            f"match {o.match:g}: {s.blocks:,} blocks, {s.logs:,} logs, {s.matched:,} matched,"
            f" {s.payments_changed:,} payments changed, {s.events:,} events;"
            f" {c['transactions']:,} transaction rows, {c['confirmed']:,} confirmed +"
            f" {c['confirming']:,} confirming payments; raw read saw {o.raw.logs:,} logs{note}"
        )
    print(
        f"\ntargets (for comparison, never pass/fail): speed vs raw >= {TARGET_SPEED} at match "
        f"0.01; >= {TARGET_CREDITED:,} credited/s at match 1"
    )


async def main_async(args: argparse.Namespace, chain: common.BenchChain) -> None:
    work = common.workdir()
    try:
        outcomes = [await run_one(chain, match, args, work) for match in args.match]
        report(chain, outcomes, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.configure_bench_logging(args.log_level, args.log_file)
    if args.phases:
        phases.install()
    shape = common.Shape(args.blocks, args.per_block, args.recipients)
    # anvil is started from the main thread: it dies with the thread that started it
    chain = common.open_chain(shape, args.cache_dir, rebuild=args.rebuild)
    try:
        if not args.no_gc_tuning:
            tune_gc()  # as `scanner run` and `scanner backfill` do before they start
        origin = "built" if chain.built else "loaded from cache"
        print(f"chain {shape.key} {origin}; anvil ready in {chain.ready_seconds:.1f} s", flush=True)
        asyncio.run(main_async(args, chain))
    finally:
        chain.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
