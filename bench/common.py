"""What the benchmark scripts share: options, the raw read, measuring, the table.

- :func:`raw_get_logs` is the ceiling: ``eth_getLogs`` in 100-block ranges, 8 concurrent,
  parsed with orjson (the fastest way found to read anvil).
- :func:`run_bench` is a script's main: the chain (:mod:`bench.chain`), then per ``--match`` the
  raw read, a fresh database with its payments (:mod:`bench.database`), and the scanner's run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import shutil
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import httpx
import orjson

from bench.chain import DEFAULT_CACHE, BenchChain, Shape, bench_chain_settings, open_chain
from bench.cpu import Sample, sample
from bench.database import BenchDB, fresh_database, insert_payments, workdir
from scanner.chain.reader import ChainReader
from scanner.config import ChainSettings, LoggingSettings
from scanner.core.decode import TRANSFER_TOPIC
from scanner.observe.logging import configure_logging
from scanner.observe.metrics import Metrics
from scanner.runtime import tune_gc
from scanner.testkit.postgres import PG_ADMIN_URL


def configure_bench_logging(level: str, path: str | None) -> None:
    """The scanner's real logging pipeline (JSON lines), into ``path`` or /dev/null."""
    stream = open(path or os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    configure_logging(LoggingSettings(level=level, format="json"), stream=stream)


# --------------------------------------------------------------------------- the ceiling


@dataclass(frozen=True)
class RawRead:
    logs: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.logs / self.seconds if self.seconds > 0 else 0.0


TRANSFERS = {"topics": [TRANSFER_TOPIC]}


def _get_logs_body(i: int, token: str, lo: int, hi: int) -> bytes:
    query = {"fromBlock": hex(lo), "toBlock": hex(hi), "address": [token]}
    return orjson.dumps(
        {"jsonrpc": "2.0", "id": i, "method": "eth_getLogs", "params": [query | TRANSFERS]}
    )


def _counted(answer: dict[str, Any], lo: int, hi: int) -> int:
    if "error" in answer:
        raise RuntimeError(f"eth_getLogs {lo}..{hi}: {answer['error']}")
    return len(answer["result"])


async def _timed(
    one: Callable[[int, int, int], Awaitable[int]], start: int, end: int, span: int
) -> RawRead:
    """Every ``span``-block range of ``start..end`` read by ``one`` at once (its own gate
    bounds them), after one read to warm the connection outside the clock."""
    ranges = [(lo, min(lo + span - 1, end)) for lo in range(start, end + 1, span)]
    await one(0, start, start)
    started = time.perf_counter()
    counts = await asyncio.gather(*(one(i, lo, hi) for i, (lo, hi) in enumerate(ranges, 1)))
    return RawRead(sum(counts), time.perf_counter() - started)


async def raw_get_logs(
    url: str, token: str, start: int, end: int, *, span: int = 100, concurrency: int = 8
) -> RawRead:
    """``eth_getLogs`` of ``token`` Transfers over ``start..end``: ``span``-block ranges,
    ``concurrency`` in flight, bodies parsed with orjson; no decoding, no database."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=120) as client:

        async def one(i: int, lo: int, hi: int) -> int:
            async with gate:
                response = await client.post(url, content=_get_logs_body(i, token, lo, hi))
                return _counted(orjson.loads(response.content), lo, hi)

        return await _timed(one, start, end, span)


async def raw_get_logs_aiohttp(
    url: str, token: str, start: int, end: int, *, span: int = 100, concurrency: int = 8
) -> RawRead:
    """:func:`raw_get_logs` read with aiohttp instead of httpx (what the scanner's transport
    is): the same requests, bodies read whole and parsed with orjson."""
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(i: int, lo: int, hi: int) -> int:
            body = _get_logs_body(i, token, lo, hi)
            async with gate, session.post(url, data=body) as response:
                return _counted(orjson.loads(await response.read()), lo, hi)

        return await _timed(one, start, end, span)


async def raw_median(
    url: str,
    token: str,
    start: int,
    end: int,
    repeats: int,
    read: Callable[[str, str, int, int], Awaitable[RawRead]] = raw_get_logs,
) -> tuple[RawRead, list[RawRead]]:
    """The raw read ``repeats`` times; the run with the median time, and all runs."""
    runs = [await read(url, token, start, end) for _ in range(max(1, repeats))]
    middle = statistics.median_low([r.seconds for r in runs])
    return next(r for r in runs if r.seconds == middle), runs


# --------------------------------------------------------------------------- output


def rate(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A small Markdown table (readable as text, pasteable into a README)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(f"\n{title}\n")
    print(line(header))
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for row in rows:
        print(line(row))
    print(flush=True)


# --------------------------------------------------------------------------- the scripts

T = TypeVar("T")
OutcomeT = TypeVar("OutcomeT")  # a script's outcome of one --match

TARGET_SPEED = 0.8  # x the raw limit, when 1% of logs pay a payment
TARGET_CREDITED = 50_000  # credited transfers/s, when every log pays one


def parse_bench_args(
    argv: list[str] | None,
    description: str,
    *,
    blocks: int,
    profile_help: str,
    rounds: bool = False,
) -> argparse.Namespace:
    """The options both scripts take; ``blocks`` is the default chain length; ``rounds``: the
    script takes ``--rounds`` too."""
    parser = argparse.ArgumentParser(description=description)
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
        default=PG_ADMIN_URL,
        help="PostgreSQL server URL allowed to create databases",
    )
    parser.add_argument("--blocks", type=int, default=blocks)
    parser.add_argument("--per-block", type=int, default=20)
    parser.add_argument("--recipients", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the product's")
    parser.add_argument("--concurrency", type=int, default=None, help="default: the product's")
    parser.add_argument(
        "--filter-recipients-max",
        type=int,
        default=None,
        help="default: the product's (1,000); 0 reads the tokens' logs whole, as a book of more"
        " addresses than that does",
    )
    parser.add_argument(
        "--book",
        type=int,
        default=0,
        metavar="N",
        help="N other open payments beside those that are paid (unpaid, at addresses no"
        " transfer pays, written as a gateway writes them): a shop's real book; more addresses"
        " than filter_recipients_max, and every log is read whole",
    )
    parser.add_argument("--raw-repeats", type=int, default=3)
    if rounds:
        parser.add_argument(
            "--rounds",
            type=int,
            default=1,
            metavar="R",
            help="measure each --match R times, one round after the other (each its own raw read,"
            " fresh database and run), and print the median of the rounds' ratios",
        )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
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
    parser.add_argument("--profile", default=None, help=profile_help)
    parser.add_argument(
        "--deposit",
        action="store_true",
        help="one long-lived payment per watched recipient, for all it receives (an exchange's"
        " deposit addresses), instead of one payment per log",
    )
    return parser.parse_args(argv)


@dataclass
class MatchSetup:
    """One ``--match`` fraction, ready to measure: the raw read done, payments in a fresh
    database, and a reader for the scanner."""

    raw: RawRead
    raw_aiohttp: RawRead  # the same read with aiohttp (the scanner's transport)
    db: BenchDB
    payments: int
    settings: ChainSettings
    reader: ChainReader
    metrics: Metrics
    raw_cpu: Sample | None = None  # one raw (httpx) read's CPU, the mean of its runs


@asynccontextmanager
async def match_setup(
    chain: BenchChain, match: float, args: argparse.Namespace, work: Path
) -> AsyncIterator[MatchSetup]:
    """The raw read over the chain's range, then a fresh database with the payments of
    ``match``, and the scanner's reader; the reader and the database are closed on exit."""
    start, end = chain.first_block, chain.head
    before = sample()
    raw, _ = await raw_median(chain.url, chain.token, start, end, args.raw_repeats)
    raw_cpu = (sample() - before).per(args.raw_repeats)
    raw_aiohttp, _ = await raw_median(
        chain.url, chain.token, start, end, args.raw_repeats, raw_get_logs_aiohttp
    )
    db = await fresh_database(args.db, work, args.pg_url)
    reader = None
    try:
        payments = await insert_payments(
            db,
            chain,
            match,
            created_at=chain.block_timestamp(start - 1),
            seen_at_block=start - 1,
            deposit=args.deposit,
            book=args.book,
        )
        settings = bench_chain_settings(
            chain,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            filter_recipients_max=args.filter_recipients_max,
        )
        metrics = Metrics()
        reader = ChainReader.from_settings(settings, metrics)
        yield MatchSetup(raw, raw_aiohttp, db, payments, settings, reader, metrics, raw_cpu)
    finally:
        if reader is not None:
            await reader.client.aclose()
        await db.close()


async def measure(
    run: Callable[[], Awaitable[T]], args: argparse.Namespace, match: float
) -> tuple[T, float]:
    """``run()`` on the clock (and under cProfile with ``--profile``); its result and seconds."""
    profile = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profile is not None:
        profile.enable()
    result = await run()
    seconds = time.perf_counter() - started
    if profile is not None:
        profile.disable()
        profile.dump_stats(f"{args.profile}.{match:g}")
    return result, seconds


def print_targets() -> None:
    print(
        f"\ntargets (for comparison, never pass/fail): speed vs raw >= {TARGET_SPEED} at match "
        f"0.01; >= {TARGET_CREDITED:,} credited/s at match 1"
    )


def run_bench(
    args: argparse.Namespace,
    run_one: Callable[[BenchChain, float, argparse.Namespace, Path], Awaitable[OutcomeT]],
    report: Callable[[BenchChain, list[OutcomeT], argparse.Namespace], None],
) -> int:
    """A script's main: logging, the chain, GC tuning, ``run_one`` per ``--match``, ``report``."""
    configure_bench_logging(args.log_level, args.log_file)
    shape = Shape(args.blocks, args.per_block, args.recipients)
    # anvil is started from the main thread: it dies with the thread that started it
    chain = open_chain(shape, args.cache_dir, rebuild=args.rebuild)
    try:
        if not args.no_gc_tuning:
            tune_gc()  # as `scanner run` and `scanner backfill` do before they start
        origin = "built" if chain.built else "loaded from cache"
        print(f"chain {shape.key} {origin}; anvil ready in {chain.ready_seconds:.1f} s", flush=True)
        asyncio.run(_run_matches(args, chain, run_one, report))
    finally:
        chain.close()
    return 0


async def _run_matches(
    args: argparse.Namespace,
    chain: BenchChain,
    run_one: Callable[[BenchChain, float, argparse.Namespace, Path], Awaitable[OutcomeT]],
    report: Callable[[BenchChain, list[OutcomeT], argparse.Namespace], None],
) -> None:
    work = workdir()
    try:
        outcomes = [await run_one(chain, match, args, work) for match in args.match]
        report(chain, outcomes, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
