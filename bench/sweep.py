"""The sweep's cost: the live scan following a chain block by block, with and without it.

    .venv/bin/python -m bench.sweep [--blocks 400] [--transfers 20] [--backend postgresql]

One anvil with one token and ``--blocks`` blocks of ``--transfers`` Transfer logs each (to 200
recipients, a tenth of them paying a payment of their own). Per run, a fresh database and a
``ChainScanner`` in-process with the product's defaults (12 confirmations, ``sweep_blocks``
16), whose head moves one block per tick, as ``scanner run`` sees a chain when it is caught up:
the same blocks, read the same way, with the sweep off and on. Counted: the RPC calls by method
(``scanner_rpc_requests_total``) and the time of each tick (the sweep's part apart). Figures are
printed, never judged.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from bench.common import configure_bench_logging
from bench.database import fresh_database, workdir
from scanner.chain.reader import ChainReader
from scanner.devchain import DevChain
from scanner.observe.metrics import Metrics
from scanner.scan.live import ChainScanner
from scanner.scan.parts import ChainParts
from scanner.scan.sweep import Sweep
from scanner.testkit.gateway import NewPayment, insert_payments, token_row_id
from scanner.testkit.postgres import PG_ADMIN_URL
from scanner.testkit.settings import SCENARIO, chain_settings

CHAIN = "anvil"  # scanner.testkit.settings' chain (id 31337)
RECIPIENTS = 200
VALUE = 1_000_000


@dataclass
class Run:
    name: str
    blocks: int
    calls: Counter[str]
    ticks: list[float]  # ms
    sweep: list[float]  # ms, the sweep's part of each tick
    credited: int


def build(chain: DevChain, blocks: int, transfers: int) -> tuple[str, int, int]:
    """The token and the first and last block of the bulk (automine off: one block a step)."""
    token = chain.deploy_token("Tether USD", "USDT", 6)
    customer = chain.accounts[1]
    chain.mint(token, customer, 10**18)
    chain.set_automine(False)
    first = chain.head() + 1
    n = 0
    for _ in range(blocks):
        for _ in range(transfers):
            chain.transfer(token, customer, address(n % RECIPIENTS), VALUE)
            n += 1
        chain.mine(1)
    return token, first, chain.head()


def address(n: int) -> str:
    return "0x" + f"{n + 1:040x}"


async def run_one(
    chain: DevChain, token: str, first: int, last: int, swept: bool, args: argparse.Namespace
) -> Run:
    db = await fresh_database(args.backend, workdir(), args.pg_url)
    metrics = Metrics()
    defaults = dict.fromkeys(SCENARIO)  # None: the product's defaults, not a test scenario's
    settings = chain_settings(
        chain.url,
        [("USDT", token, 6)],
        **defaults | {"confirmations": 12, "start_block": first, "sweep": swept},
    )
    reader = ChainReader.from_settings(settings, metrics)
    scanner = ChainScanner(ChainParts(settings, reader, db.sessions, metrics=metrics))
    sweep_ms: list[float] = []
    try:
        await scanner.prepare()
        await write_payments(db.engine, chain, token, first)
        if swept:
            scanner.sweep = timed(
                Sweep(settings, scanner.reader, db.sessions, metrics=metrics), sweep_ms
            )
        return await follow(scanner, metrics, first, last, sweep_ms, "sweep on" if swept else "off")
    finally:
        if scanner.sweep is not None:
            await scanner.sweep.aclose()
        await scanner.reader.client.aclose()
        await db.close()


def timed(sweep: Sweep, out: list[float]) -> Sweep:
    run = sweep.run

    async def measured(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        try:
            return await run(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            out.append((time.perf_counter() - started) * 1000)

    sweep.run = measured  # type: ignore[method-assign,assignment]
    return sweep


async def follow(
    scanner: ChainScanner, metrics: Metrics, first: int, last: int, sweep: list[float], name: str
) -> Run:
    head = first

    async def read_head() -> int:
        return head

    scanner.read_head = read_head
    ticks = []
    for head in range(first, last + 1):  # noqa: B007 - read by read_head
        started = time.perf_counter()
        await scanner.tick()
        ticks.append((time.perf_counter() - started) * 1000)
    calls: Counter[str] = Counter()
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "scanner_rpc_requests_total":
                calls[sample.labels["method"]] += int(sample.value)
    credited = int(
        metrics.registry.get_sample_value("scanner_transfers_matched_total", {"chain": CHAIN}) or 0
    )
    return Run(name, last - first + 1, calls, ticks, sweep, credited)


async def write_payments(engine: object, chain: DevChain, token: str, first: int) -> None:
    """A payment for each tenth recipient, large enough to stay open all run."""
    created = int(chain.block(first - 1)["timestamp"], 16)
    async with engine.begin() as conn:  # type: ignore[attr-defined]
        token_id = await token_row_id(conn, CHAIN, token)
        rows = [
            NewPayment(
                uuid.uuid4(),
                token_id,
                CHAIN,
                address(n),
                "1000000",
                created + 86_400,
                created,
                first - 1,
            )
            for n in range(0, RECIPIENTS, 10)
        ]
        await insert_payments(conn, rows)


def report(runs: list[Run]) -> None:
    print("\nthe live scan following the chain block by block (one tick a block)\n")
    columns = "run | blocks | eth_getLogs / block | RPC calls / block | tick ms p50 | p95 | mean"
    print(f"| {columns} | sweep ms / tick: p50, mean | credited |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        q = statistics.quantiles(run.ticks, n=100, method="inclusive")
        sweep = "–"
        if run.sweep:
            sweep = f"{statistics.median(run.sweep):.1f}, {statistics.fmean(run.sweep):.1f}"
        print(
            f"| {run.name} | {run.blocks} | {run.calls['eth_getLogs'] / run.blocks:.3f} | "
            f"{sum(run.calls.values()) / run.blocks:.3f} | {statistics.median(run.ticks):.1f} | "
            f"{q[94]:.1f} | {statistics.fmean(run.ticks):.1f} | {sweep} | {run.credited} |"
        )
    for run in runs:
        print(f"{run.name}: {dict(sorted(run.calls.items()))}")


async def main(args: argparse.Namespace) -> None:
    configure_bench_logging("info", None)
    with DevChain.start() as chain:
        token, first, last = await asyncio.to_thread(build, chain, args.blocks, args.transfers)
        runs = []
        for _ in range(args.repeats):
            for swept in (False, True):
                runs.append(await run_one(chain, token, first, last, swept, args))
    report(runs)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=400)
    parser.add_argument("--transfers", type=int, default=20, help="Transfer logs per block")
    parser.add_argument("--repeats", type=int, default=2, help="off/on pairs, alternated")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--pg-url", default=PG_ADMIN_URL)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
