"""The open-payment book: does a block cost the same with a big book?

Anvil with 200 blocks, each paying one payment (one Transfer log a block). Beside those 200
payments, the database holds N other open payments, written by plain SQL as a gateway would
(``INSERT … SELECT`` over a generated series), unseen by the scanner, created before the chain
and expiring next year, at addresses no transfer pays; nobody runs ``ANALYZE``. The scanner is
the ``scanner run`` process users run (batch size 1, the product's other defaults, JSON logs
read by the bench), from the first of the 200 blocks to the head, then stopped by SIGTERM.
Measured per database and per N:

- start to first range: from starting the process to the first ``range_scanned`` it logs (the
  interpreter's start, the chain's preparation and the first slice of the look at the N unseen
  payments included);
- per block: from the first ``range_scanned`` to the head's, divided by the blocks between;
- peak RSS of the scanner's process (``ru_maxrss`` of that child).

    python -m bench.book                              # 1,000 vs 1,000,000, SQLite and PostgreSQL
    python -m bench.book --book 1000 100000 --db sqlite
    python -m bench.book --seen                       # the book already looked at
    python -m bench.book --db sqlite --rounds 3       # each book three times, alternated

With ``--seen`` the book is written as already looked at (``seen_at_block`` set): per block is
then the statements' cost at N alone, without the first look running beside the scan.

With ``--rounds R`` the books are measured R times, one round after the other (each round
every book once, the smallest first): each book is compared with the smallest of its own
round, and the median of those ratios is printed. A machine whose speed changes from one
minute to the next then moves both sides of a ratio, not one.

Figures are printed, never judged: the exit status is 0 whatever they are.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Any

from sqlalchemy import text

from bench import common
from bench.chain import CHAIN, DEFAULT_CACHE, SYMBOL, Shape, open_chain, recipient_addresses
from bench.database import BenchDB, fresh_database, insert_book, insert_token_row, workdir
from scanner.chain.reader import ChainReader
from scanner.core.amounts import to_amount
from scanner.observe.metrics import Metrics
from scanner.testkit.gateway import NewPayment, insert_payments
from scanner.testkit.postgres import PG_ADMIN_URL
from scanner.testkit.settings import SCENARIO, chain_settings

BLOCKS = 200
YEAR = 365 * 86_400
DAY = 86_400
TARGET_PER_BLOCK = 1.2  # x the per-block cost with 1,000 open payments
TARGET_RSS_MB = 250
TARGET_START_S = 10.0
SCAN_LIMIT_S = 1_200.0


@dataclass
class Job:
    """What a child process needs: the chain (already running) and one database and book."""

    url: str
    token: str
    decimals: int
    amount: int
    first_block: int
    head: int
    backend: str
    book: int
    pg_url: str
    seen: bool  # the book already looked at (seen_at_block set): no first look runs
    root: str  # the checkout whose ``scanner`` package runs (A/B against another one)


@dataclass
class Outcome:
    backend: str
    book: int
    round: int
    write_s: float
    start_s: float
    ready_s: float  # of start_s, after the process logged scanner_started
    per_block_ms: float
    blocks: int
    peak_rss_mb: float
    confirmed: int


# --------------------------------------------------------------------------- the book


async def write_payments(db: BenchDB, job: Job) -> float:
    """The token row, the 200 paid payments and the book; seconds it took."""
    started = time.perf_counter()
    token_id = await insert_token_row(db, job.token, job.decimals)
    first = await _block_time(job, job.first_block)
    created, expires = first - DAY, first + YEAR
    amount = str(to_amount(job.amount, job.decimals))
    paid = [
        NewPayment(uuid.uuid4(), token_id, CHAIN, address, amount, expires, created)
        for address in recipient_addresses(BLOCKS)
    ]
    async with db.engine.begin() as conn:
        await insert_payments(conn, paid)
    seen = job.first_block - 1 if job.seen else None
    await insert_book(db, token_id, job.book, created=created, expires=expires, seen_at_block=seen)
    return time.perf_counter() - started


async def _block_time(job: Job, number: int) -> int:
    settings = _settings(job)
    reader = ChainReader.from_settings(settings, Metrics())
    try:
        return (await reader.headers(number, number))[0].timestamp
    finally:
        await reader.client.aclose()


def _settings(job: Job) -> Any:
    product_defaults = dict.fromkeys(SCENARIO)  # None: the product's, not a test scenario's
    overrides = {"name": CHAIN, "confirmations": 12, "start_block": job.first_block}
    return chain_settings(
        job.url,
        [(SYMBOL, job.token, job.decimals)],
        **product_defaults | overrides | {"batch_size": 1},
    )


# --------------------------------------------------------------------------- one run


def config_toml(job: Job) -> str:
    """``scanner run``'s configuration: the bench chain, batch size 1, the product's defaults
    otherwise; JSON logs on stdout (the bench reads ``range_scanned`` from them)."""
    return (
        '[metrics]\nenabled = false\n\n[logging]\nlevel = "info"\nformat = "json"\n\n'
        f'[[chains]]\nname = "{CHAIN}"\nchain_id = 31337\nrpc_urls = ["{job.url}"]\n'
        f"confirmations = 12\nbatch_size = 1\nstart_block = {job.first_block}\n\n"
        f'[[chains.tokens]]\nsymbol = "{SYMBOL}"\naddress = "{job.token}"\n'
        f"decimals = {job.decimals}\n"
    )


def _ranges(log: Path) -> list[tuple[float, int]]:
    """(unix time, last block) of ``scanner_started`` (block -1), then of each
    ``range_scanned`` the process logged so far."""
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"range_scanned"' not in line and '"scanner_started"' not in line:
            continue
        event = json.loads(line)
        at = datetime.fromisoformat(event["timestamp"]).timestamp()
        out.append((at, int(event.get("to_block", -1))))
    return out


def run_scanner(db: BenchDB, job: Job, work: Path) -> tuple[float, float, float, int, float]:
    """``scanner run`` from the first block to the head, in a process of its own: (start to
    first range s, of which after ``scanner_started`` s, per block s, blocks after the first
    range, peak RSS MB). Started, then stopped by SIGTERM once it logged the head's range."""
    config, log = work / "scanner.toml", work / "scanner.log"
    config.write_text(config_toml(job), encoding="utf-8")
    env = {**os.environ, "ENV": "development", "DATABASE_URL_DEV": db.url, "PYTHONUNBUFFERED": "1"}
    started = time.time()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scanner", "run", "--config", str(config)],
            env=env, stdout=out, stderr=out, cwd=job.root,
        )  # fmt: skip
    try:
        ranges = _wait_for_head(proc, log, job.head)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, _, usage = os.wait4(proc.pid, 0)
    (ready_at, _), (first_at, first_end), (last_at, _) = ranges[0], ranges[1], ranges[-1]
    blocks = job.head - first_end
    per_block = (last_at - first_at) / max(1, blocks)
    return first_at - started, first_at - ready_at, per_block, blocks, usage.ru_maxrss / 1024


def _wait_for_head(proc: subprocess.Popen[bytes], log: Path, head: int) -> list[tuple[float, int]]:
    deadline = time.monotonic() + SCAN_LIMIT_S
    while time.monotonic() < deadline:
        ranges = _ranges(log)
        if ranges and ranges[-1][1] >= head:
            return ranges
        if proc.poll() is not None:
            raise RuntimeError(f"scanner run exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"scanner run did not reach {head} in {SCAN_LIMIT_S} s")


async def prepare(job: Job, work: Path) -> tuple[BenchDB, float]:
    db = await fresh_database(job.backend, work, job.pg_url)
    try:
        return db, await write_payments(db, job)
    finally:
        await db.engine.dispose()


async def confirmed(db: BenchDB) -> int:
    paid = "SELECT count(*) FROM payments WHERE status IN ('confirmed', 'confirming')"
    try:
        async with db.engine.connect() as conn:
            return int((await conn.execute(text(paid))).scalar_one())
    finally:
        await db.close()


def run_one(job: Job, round_: int) -> Outcome:
    work = workdir()
    db, write_s = asyncio.run(prepare(job, work))
    start_s, ready_s, per_block, blocks, rss = run_scanner(db, job, work)
    paid = asyncio.run(confirmed(db))
    return Outcome(
        job.backend,
        job.book,
        round_,
        write_s,
        start_s,
        ready_s,
        per_block * 1000,
        blocks,
        rss,
        paid,
    )


def ratio(o: Outcome, outcomes: list[Outcome]) -> float:
    """``o``'s per-block time over the smallest book's of its database and round."""
    base = next(b for b in outcomes if (b.backend, b.round) == (o.backend, o.round))
    return o.per_block_ms / base.per_block_ms if base.per_block_ms > 0 else 0.0


def report(outcomes: list[Outcome]) -> None:
    rows = []
    for o in outcomes:
        rows.append(
            [
                o.backend,
                str(o.round + 1),
                f"{o.book:,}",
                f"{o.write_s:.1f}",
                f"{o.start_s:.2f} ({o.ready_s:.2f})",
                f"{o.per_block_ms:.1f}",
                f"{ratio(o, outcomes):.2f}x",
                f"{o.peak_rss_mb:.0f}",
                f"{o.confirmed}/{BLOCKS}",
            ]
        )
    common.print_table(
        f"The open-payment book: {BLOCKS} blocks each paying one payment, batch size 1",
        [
            "db",
            "round",
            "open payments",
            "book written s",
            "start to first range s (after scanner_started)",
            "per block ms",
            "vs smallest book of its round",
            "peak RSS MB",
            "paid",
        ],
        rows,
    )
    smallest = min(o.book for o in outcomes)  # every database measures the same books
    for backend, book in sorted({(o.backend, o.book) for o in outcomes}):
        ratios = sorted(
            ratio(o, outcomes) for o in outcomes if (o.backend, o.book) == (backend, book)
        )
        if len(ratios) > 1 and book != smallest:
            spread = f"{ratios[0]:.2f}–{ratios[-1]:.2f}x"
            rounds = f"{len(ratios)} rounds ({spread})"
            print(f"{backend} {book:,}: median {median(ratios):.2f}x of {rounds}")
    print(
        f"targets (for comparison, never pass/fail): per block <= {TARGET_PER_BLOCK}x the "
        f"smallest book's; peak RSS <= {TARGET_RSS_MB} MB; start to first range <= "
        f"{TARGET_START_S:.0f} s with 1,000,000 unseen payments"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", type=int, nargs="+", default=[1_000, 1_000_000])
    parser.add_argument(
        "--db", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument("--pg-url", default=PG_ADMIN_URL)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument(
        "--seen",
        action="store_true",
        help="write the book as already looked at: per block without the first look beside it",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every book this many times, round after round, each against its round's"
        " smallest",
    )
    parser.add_argument(
        "--scanner-root",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the checkout whose scanner package runs (default: this one; for an A/B)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shape = Shape(BLOCKS, 1, BLOCKS)
    chain = open_chain(shape, args.cache_dir)
    try:
        print(f"chain {shape.key}; anvil ready in {chain.ready_seconds:.1f} s", flush=True)
        outcomes = []
        for round_, backend in ((r, b) for b in args.db for r in range(max(1, args.rounds))):
            for book in sorted(args.book):
                job = Job(
                    chain.url,
                    chain.token,
                    shape.decimals,
                    shape.amount,
                    chain.first_block,
                    chain.head,
                    backend,
                    book,
                    args.pg_url,
                    args.seen,
                    str(args.scanner_root),
                )
                outcome = run_one(job, round_)
                print(f"  {backend} {book:,}: {json.dumps(asdict(outcome))}", flush=True)
                outcomes.append(outcome)
        report(outcomes)
    finally:
        chain.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
