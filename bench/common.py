"""What the benchmarks share: a cached bulk chain, fresh databases, payments, the raw read.

- :func:`open_chain` serves a bulk chain of a given :class:`Shape` (blocks x Transfer logs per
  block, cycling over N recipients). The first run builds it with ``--dump-state`` into the cache
  directory (keyed by the shape); later runs start anvil with ``--load-state`` in a second or two.
- :func:`fresh_database` makes a new migrated database (SQLite file copied from a template
  migrated once per process, or a PostgreSQL database created for the run and dropped after).
- :func:`insert_payments` writes the gateway's payments in ONE executemany, as plain SQL.
- :func:`raw_get_logs` is the ceiling: ``eth_getLogs`` in 100-block ranges, 8 concurrent,
  parsed with orjson (the method of ../shared/ANVIL.md).

Payments: a chosen fraction of the recipients are "watched" (spread evenly over the recipient
list); each Transfer log to a watched recipient has a payment of its own, for exactly the
transferred amount. So ``--match 0.01`` makes 1% of the logs pay a payment and ``--match 1.0``
makes every log pay one. Payments are created at the timestamp of the block before the scanned
range, expire 30 days later, and are marked as already seen by the scanner (``seen_at_block``),
so the scan does not spend its time on the one-time look-back for payments written behind the
cursor (that path is not what these benchmarks measure). Their ``created_at`` are a millisecond
apart (100,000 payments span 100 s, within the default 300 s grace), so every transfer, even in
the first block, finds its payment created in time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import itertools
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import httpx
import orjson
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bench import phases
from scanner.app import make_reader
from scanner.chain.reader import ChainReader
from scanner.config import ChainSettings, LoggingSettings, Settings, load_settings
from scanner.core.amounts import to_amount
from scanner.core.decode import TRANSFER_TOPIC
from scanner.db import migrate
from scanner.db.engine import make_engine, make_session_factory
from scanner.devchain import FAST_BULK_ARGS, Anvil, DevChain, build_bulk_chain
from scanner.observe.logging import configure_logging
from scanner.observe.metrics import Metrics
from scanner.runtime import tune_gc

CHAIN = "bench"
CHAIN_ID = 31337
SYMBOL = "BUSD"
DEFAULT_CACHE = Path(os.environ.get("CTRIP_BENCH_CACHE", "/tmp/ctrip-bench-cache"))
DEFAULT_PG_ADMIN = os.environ.get(
    "SCANNER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
FORMAT_VERSION = 1
PAYMENT_LIFETIME_S = 30 * 24 * 3600
CREATED_STEP_S = 0.001  # 100,000 payments span 100 s: within the scanner's default 300 s grace
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


# --------------------------------------------------------------------------- the chain


@dataclass(frozen=True)
class Shape:
    """A bulk chain: ``blocks`` blocks of ``per_block`` Transfer logs each, to ``recipients``."""

    blocks: int
    per_block: int
    recipients: int
    amount: int = 1_000  # base units per transfer
    decimals: int = 6

    @property
    def logs(self) -> int:
        return self.blocks * self.per_block

    @property
    def key(self) -> str:
        return (
            f"v{FORMAT_VERSION}-b{self.blocks}-t{self.per_block}-r{self.recipients}"
            f"-a{self.amount}-d{self.decimals}"
        )


def recipient_addresses(count: int) -> list[str]:
    """``count`` deterministic, distinct, lower-case addresses."""
    return [
        "0x" + hashlib.sha256(f"ctrip-bench-recipient-{i}".encode()).hexdigest()[:40]
        for i in range(count)
    ]


@dataclass
class BenchChain:
    """A running anvil serving a bulk chain; the bulk logs are in ``first_block..head``."""

    anvil: Anvil
    shape: Shape
    token: str
    first_block: int
    head: int
    built: bool  # built in this run (else loaded from the cache)
    ready_seconds: float

    @property
    def url(self) -> str:
        return self.anvil.url

    def block_timestamp(self, number: int) -> int:
        return int(self.anvil.rpc("eth_getBlockByNumber", [hex(number), False])["timestamp"], 16)

    def recipient_of_log(self, n: int) -> int:
        """Index (in :func:`recipient_addresses`) of the recipient of the n-th bulk log."""
        return n % self.shape.recipients

    def close(self) -> None:
        self.anvil.stop()


def _paths(cache_dir: Path, shape: Shape) -> tuple[Path, Path]:
    return cache_dir / f"{shape.key}.state.json", cache_dir / f"{shape.key}.meta.json"


def open_chain(
    shape: Shape, cache_dir: Path = DEFAULT_CACHE, *, rebuild: bool = False
) -> BenchChain:
    """Start anvil on the cached chain of ``shape``, building (and caching) it first if needed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    state, meta_path = _paths(cache_dir, shape)
    built = False
    if rebuild or not (state.is_file() and meta_path.is_file()):
        _build(shape, state, meta_path)
        built = True
    meta = json.loads(meta_path.read_text())
    started = time.perf_counter()
    node = Anvil.start(
        chain_id=CHAIN_ID, load_state=str(state), extra_args=FAST_BULK_ARGS, ready_timeout=180
    )
    ready = time.perf_counter() - started
    head = int(node.rpc("eth_blockNumber"), 16)
    if head != meta["head"]:
        node.stop()
        raise RuntimeError(
            f"cached chain {state} answers head {head}, expected {meta['head']}: "
            "rerun with --rebuild"
        )
    return BenchChain(
        anvil=node,
        shape=shape,
        token=meta["token"],
        first_block=meta["first_block"],
        head=head,
        built=built,
        ready_seconds=ready,
    )


def _build(shape: Shape, state: Path, meta_path: Path) -> None:
    print(f"building bulk chain {shape.key} (once; cached in {state.parent}) ...", flush=True)
    started = time.perf_counter()
    partial = state.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    node = Anvil.start(chain_id=CHAIN_ID, dump_state=str(partial), extra_args=FAST_BULK_ARGS)
    try:
        chain = DevChain(node)
        token = chain.deploy_token("Bench USD", SYMBOL, shape.decimals)
        before = chain.head()
        build_bulk_chain(
            chain,
            token,
            shape.blocks,
            shape.per_block,
            recipient_addresses(shape.recipients),
            amount=shape.amount,
        )
        head = chain.head()
        chain.close()
    finally:
        node.stop(timeout=600)  # SIGTERM: anvil writes --dump-state on the way out
    first_block = before + 2  # build_bulk_chain mines one minting block first
    if head != first_block + shape.blocks - 1:
        raise RuntimeError(
            f"bulk build ended at head {head}, expected {first_block + shape.blocks - 1}"
        )
    if not partial.is_file() or partial.stat().st_size == 0:
        raise RuntimeError(f"anvil wrote no state to {partial}")
    os.replace(partial, state)
    meta = {"token": token, "first_block": first_block, "head": head, "shape": shape.key}
    meta_path.write_text(json.dumps(meta, indent=2))
    size_mb = state.stat().st_size / 1e6
    print(f"built in {time.perf_counter() - started:.1f} s ({size_mb:.0f} MB state)", flush=True)


# --------------------------------------------------------------------------- payments


def watched_recipients(count: int, fraction: float) -> list[bool]:
    """Which recipients have payments: ``round(count * fraction)`` of them, spread evenly."""
    fraction = min(max(fraction, 0.0), 1.0)
    return [int((i + 1) * fraction) > int(i * fraction) for i in range(count)]


def payment_plan(chain: BenchChain, fraction: float) -> list[str]:
    """One payment per bulk log that goes to a watched recipient: the addresses, in log order."""
    shape = chain.shape
    watched = watched_recipients(shape.recipients, fraction)
    addresses = recipient_addresses(shape.recipients)
    out: list[str] = []
    for n in range(shape.logs):
        r = chain.recipient_of_log(n)
        if watched[r]:
            out.append(addresses[r])
    return out


def _moment(backend: str, unix: float) -> Any:
    moment = datetime.fromtimestamp(unix, tz=UTC)
    return moment if backend == "postgresql" else moment.strftime(SQLITE_TIME)


def _uuid(backend: str, value: uuid.UUID) -> Any:
    return value if backend == "postgresql" else str(value)


async def insert_token(db: BenchDB, chain: BenchChain) -> Any:
    """The token row, as the scanner would insert it at start (its values agree with config)."""
    token_id = uuid.uuid4()
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO tokens (id, chain, address, symbol, decimals, enabled)"
                " VALUES (:id, :chain, :address, :symbol, :decimals, :enabled)"
            ),
            {
                "id": _uuid(db.backend, token_id),
                "chain": CHAIN,
                "address": chain.token,
                "symbol": SYMBOL,
                "decimals": chain.shape.decimals,
                "enabled": True,
            },
        )
    return token_id


async def insert_payments(
    db: BenchDB, chain: BenchChain, fraction: float, *, created_at: float, seen_at_block: int
) -> int:
    """Write the payments of :func:`payment_plan` in one executemany; returns how many."""
    token_id = await insert_token(db, chain)
    addresses = payment_plan(chain, fraction)
    amount = str(to_amount(chain.shape.amount, chain.shape.decimals))
    expires = _moment(db.backend, created_at + PAYMENT_LIFETIME_S)
    token = _uuid(db.backend, token_id)
    rows = [
        {
            "id": _uuid(db.backend, uuid.uuid4()),
            "token": token,
            "chain": CHAIN,
            "address": address,
            "amount": amount,
            "expires": expires,
            # a millisecond apart, in log order (as a gateway creating them one by one would)
            "created": _moment(db.backend, created_at + n * CREATED_STEP_S),
            "seen": seen_at_block,
        }
        for n, address in enumerate(addresses)
    ]
    if not rows:
        return 0
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO payments (id, token_id, chain, address, amount, expires_at,"
                " created_at, seen_at_block) VALUES (:id, :token, :chain, :address, :amount,"
                " :expires, :created, :seen)"
            ),
            rows,
        )
    return len(rows)


# --------------------------------------------------------------------------- databases


@dataclass
class BenchDB:
    backend: str
    url: str
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    _drop: str | None = None
    _admin: str | None = None

    async def counts(self) -> dict[str, int]:
        """Rows the scan wrote, for a sanity line under the table."""
        queries = {
            "transactions": "SELECT count(*) FROM transactions",
            "events": "SELECT count(*) FROM payment_events",
            "confirmed": "SELECT count(*) FROM payments WHERE status = 'confirmed'",
            "confirming": "SELECT count(*) FROM payments WHERE status = 'confirming'",
        }
        out: dict[str, int] = {}
        async with self.engine.connect() as conn:
            for name, sql in queries.items():
                out[name] = int((await conn.execute(text(sql))).scalar_one())
        return out

    async def close(self) -> None:
        await self.engine.dispose()
        if self._drop is not None and self._admin is not None:
            await _pg_admin(self._admin, f'DROP DATABASE IF EXISTS "{self._drop}" WITH (FORCE)')


_numbers = itertools.count(1)
_sqlite_template: Path | None = None


def _settings(url: str) -> Settings:
    return load_settings(environ={"ENV": "testing", "DATABASE_URL_DEV": url})


async def _pg_admin(admin_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def fresh_database(
    backend: str, workdir: Path, pg_admin_url: str = DEFAULT_PG_ADMIN
) -> BenchDB:
    """A new database migrated to head, with the application's engine and sessions."""
    global _sqlite_template
    drop: str | None = None
    if backend == "sqlite":
        if _sqlite_template is None:
            _sqlite_template = workdir / "template.db"
            await asyncio.to_thread(migrate.upgrade, _settings(f"sqlite:///{_sqlite_template}"))
        path = workdir / f"bench-{next(_numbers)}.db"
        shutil.copyfile(_sqlite_template, path)
        url = f"sqlite:///{path}"
    elif backend == "postgresql":
        drop = f"ctrip_bench_{os.getpid()}_{next(_numbers)}"
        await _pg_admin(
            pg_admin_url, f'DROP DATABASE IF EXISTS "{drop}"', f'CREATE DATABASE "{drop}"'
        )
        url = make_url(pg_admin_url).set(database=drop).render_as_string(hide_password=False)
        await asyncio.to_thread(migrate.upgrade, _settings(url))
    else:
        raise ValueError(f"unknown backend {backend!r}")
    settings = _settings(url)
    engine = make_engine(settings)
    return BenchDB(
        backend,
        url,
        settings,
        engine,
        make_session_factory(engine),
        _drop=drop,
        _admin=pg_admin_url,
    )


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="ctrip-bench-"))


# --------------------------------------------------------------------------- the scanner


def chain_settings(chain: BenchChain, **overrides: Any) -> ChainSettings:
    """The scanner's settings for the bench chain: product defaults unless overridden."""
    data: dict[str, Any] = {
        "name": CHAIN,
        "chain_id": CHAIN_ID,
        "rpc_urls": [chain.url],
        "confirmations": 12,
        "start_block": chain.first_block,
        "tokens": [{"symbol": SYMBOL, "address": chain.token, "decimals": chain.shape.decimals}],
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    return ChainSettings.model_validate(data)


def configure_bench_logging(level: str, path: str | None) -> None:
    """The scanner's real logging pipeline (JSON lines), into ``path`` or /dev/null."""
    stream = open(path or os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    configure_logging(LoggingSettings(level=level, format="json"), stream=stream)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the ceiling


@dataclass(frozen=True)
class RawRead:
    logs: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.logs / self.seconds if self.seconds > 0 else 0.0


async def raw_get_logs(
    url: str, token: str, start: int, end: int, *, span: int = 100, concurrency: int = 8
) -> RawRead:
    """``eth_getLogs`` of ``token`` Transfers over ``start..end``: ``span``-block ranges,
    ``concurrency`` in flight, bodies parsed with orjson; no decoding, no database."""
    ranges = [(lo, min(lo + span - 1, end)) for lo in range(start, end + 1, span)]
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=120) as client:

        async def one(i: int, lo: int, hi: int) -> int:
            body = orjson.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": i,
                    "method": "eth_getLogs",
                    "params": [
                        {
                            "fromBlock": hex(lo),
                            "toBlock": hex(hi),
                            "address": [token],
                            "topics": [TRANSFER_TOPIC],
                        }
                    ],
                }
            )
            async with gate:
                response = await client.post(url, content=body)
                answer = orjson.loads(response.content)
            if "error" in answer:
                raise RuntimeError(f"eth_getLogs {lo}..{hi}: {answer['error']}")
            return len(answer["result"])

        await one(0, start, start)  # warm the connection, outside the clock
        started = time.perf_counter()
        counts = await asyncio.gather(*(one(i, lo, hi) for i, (lo, hi) in enumerate(ranges, 1)))
        seconds = time.perf_counter() - started
    return RawRead(sum(counts), seconds)


async def raw_median(
    url: str, token: str, start: int, end: int, repeats: int
) -> tuple[RawRead, list[RawRead]]:
    """The raw read ``repeats`` times; the run with the median time, and all runs."""
    runs = [await raw_get_logs(url, token, start, end) for _ in range(max(1, repeats))]
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
    argv: list[str] | None, description: str, *, blocks: int, profile_help: str
) -> argparse.Namespace:
    """The options both scripts take; ``blocks`` is the default chain length."""
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
        default=DEFAULT_PG_ADMIN,
        help="PostgreSQL server URL allowed to create databases",
    )
    parser.add_argument("--blocks", type=int, default=blocks)
    parser.add_argument("--per-block", type=int, default=20)
    parser.add_argument("--recipients", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the product's")
    parser.add_argument("--concurrency", type=int, default=None, help="default: the product's")
    parser.add_argument("--raw-repeats", type=int, default=3)
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
    parser.add_argument(
        "--phases", action="store_true", help="print wall-clock time per phase (bench/phases.py)"
    )
    parser.add_argument("--profile", default=None, help=profile_help)
    return parser.parse_args(argv)


@dataclass
class MatchSetup:
    """One ``--match`` fraction, ready to measure: the raw read done, payments in a fresh
    database, and a reader for the scanner."""

    raw: RawRead
    db: BenchDB
    payments: int
    settings: ChainSettings
    reader: ChainReader
    metrics: Metrics


@asynccontextmanager
async def match_setup(
    chain: BenchChain, match: float, args: argparse.Namespace, work: Path
) -> AsyncIterator[MatchSetup]:
    """The raw read over the chain's range, then a fresh database with the payments of
    ``match``, and the scanner's reader; the reader and the database are closed on exit."""
    start, end = chain.first_block, chain.head
    raw, _ = await raw_median(chain.url, chain.token, start, end, args.raw_repeats)
    db = await fresh_database(args.db, work, args.pg_url)
    reader = None
    try:
        payments = await insert_payments(
            db,
            chain,
            match,
            created_at=chain.block_timestamp(start - 1),
            seen_at_block=start - 1,
        )
        settings = chain_settings(chain, batch_size=args.batch_size, concurrency=args.concurrency)
        metrics = Metrics()
        reader = make_reader(settings, metrics)
        yield MatchSetup(raw, db, payments, settings, reader, metrics)
    finally:
        if reader is not None:
            await reader.client.aclose()
        await db.close()


async def measure(
    run: Callable[[], Awaitable[T]], args: argparse.Namespace, match: float, what: str
) -> tuple[T, float]:
    """``run()`` on the clock (and under cProfile with ``--profile``); its result and seconds.
    With ``--phases``, prints the time per phase titled ``"<what> phases, match <match>"``."""
    profile = cProfile.Profile() if args.profile else None
    phases.reset()
    cpu = time.process_time()
    started = time.perf_counter()
    if profile is not None:
        profile.enable()
    result = await run()
    seconds = time.perf_counter() - started
    if profile is not None:
        profile.disable()
        profile.dump_stats(f"{args.profile}.{match:g}")
    if args.phases:
        phases.report(seconds, time.process_time() - cpu, f"{what} phases, match {match:g}")
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
    if args.phases:
        phases.install()
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
