"""Mined block → ``confirming``: polling against the newHeads subscription.

    .venv/bin/python -m bench.latency [--samples 40] [--poll-interval 1.0]

One fresh anvil (automine off, blocks mined on request) and, per mode, a fresh PostgreSQL
database and a real ``scanner run`` process (its own interpreter, as in production):

- ``polling``: ``poll_interval`` 1 s, no ``ws_url``;
- ``ws_url``: the same chain with ``ws_url`` (anvil's websocket on its HTTP port) and the
  product's default ``poll_interval`` (3 s), so that the subscription is what is measured.

A sample: a payment the gateway wrote beforehand (seen by the scanner), its transfer put in the
mempool, a random pause (so blocks fall at random phases of the poll), then ``evm_mine``. The
clock starts when ``evm_mine`` is sent and stops when the commit that makes the payment
``confirming`` is seen the way a gateway sees it: the ``NOTIFY payment_events`` that the commit
sends (``LISTEN`` in this process), after which the row is read. Targets, printed for
comparison, never an exit status: ws p50 ≤ 300 ms and p95 ≤ 600 ms; polling p50 ≤ half the poll
interval + 150 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from bench.database import fresh_database, workdir
from scanner.devchain import DevChain
from scanner.testkit.gateway import NewPayment, insert_payments, token_row_id
from scanner.testkit.postgres import PG_ADMIN_URL

CHAIN = "bench"
AMOUNT = 1_000_000  # 1 token of 6 decimals
WS_POLL_INTERVAL = 3.0  # the product's default


@dataclass(frozen=True)
class Mode:
    name: str
    poll_interval: float
    ws: bool

    def target(self) -> str:
        if self.ws:
            return "p50 <= 300 ms, p95 <= 600 ms"
        return f"p50 <= {self.poll_interval * 500 + 150:.0f} ms"

    def met(self, p50: float, p95: float) -> bool:
        if self.ws:
            return p50 <= 300 and p95 <= 600
        return p50 <= self.poll_interval * 500 + 150


def config_toml(chain: DevChain, token: str, mode: Mode, start: int) -> str:
    ws = f'ws_url = "{chain.url.replace("http://", "ws://")}"\n' if mode.ws else ""
    return (
        '[metrics]\nenabled = false\n\n[logging]\nlevel = "info"\nformat = "json"\n\n'
        f'[[chains]]\nname = "{CHAIN}"\nchain_id = 31337\nrpc_urls = ["{chain.url}"]\n{ws}'
        f"confirmations = 12\npoll_interval = {mode.poll_interval}\nstart_block = {start}\n\n"
        f'[[chains.tokens]]\nsymbol = "USDT"\naddress = "{token}"\ndecimals = 6\n'
    )


class Scanner:
    """``scanner run`` in a process of its own, its JSON log in ``log``."""

    def __init__(self, config: Path, db_url: str, log: Path) -> None:
        self.config, self.db_url, self.log = config, db_url, log
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Scanner:
        env = {**os.environ, "ENV": "development", "DATABASE_URL_DEV": self.db_url}
        with self.log.open("wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "scanner", "run", "--config", str(self.config),
                env=env, stdout=out, stderr=out,
            )  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        await asyncio.wait_for(self.process.wait(), 30)


class Listener:
    """``LISTEN payment_events``: each commit that wrote events wakes :meth:`confirming`."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.notified = asyncio.Event()
        self.at = 0.0

    @classmethod
    async def open(cls, url: str) -> Listener:
        listener = cls(await asyncpg.connect(url))
        await listener.conn.add_listener("payment_events", listener._notify)
        return listener

    def _notify(self, *args: object) -> None:
        self.at = time.perf_counter()
        self.notified.set()

    async def status(self, pid: uuid.UUID) -> str:
        return str(await self.conn.fetchval("SELECT status FROM payments WHERE id = $1", pid))

    async def confirming(self, pid: uuid.UUID, limit: float = 30.0) -> float:
        """When the commit that made ``pid`` confirming notified (perf_counter seconds)."""
        async with asyncio.timeout(limit):
            while True:
                await self.notified.wait()
                self.notified.clear()
                at = self.at
                if await self.status(pid) == "confirming":
                    return at


async def write_payments(url: str, chain: DevChain, token: str, addresses: list[str]) -> list[str]:
    """``count`` payments of 1 token, one address each, written as a gateway does; their ids."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
    now = int(chain.block("latest")["timestamp"], 16)
    ids = [str(uuid.uuid4()) for _ in addresses]
    async with engine.begin() as conn:
        token_id = await token_row_id(conn, CHAIN, token)
        rows = [
            NewPayment(pid, token_id, CHAIN, address, "1", now + 86_400, now)
            for pid, address in zip(ids, addresses, strict=True)
        ]
        await insert_payments(conn, rows)
    await engine.dispose()
    return ids


def address_of(n: int) -> str:
    return "0x" + f"{n + 1:040x}"


async def until_scanned(listener: Listener, head: int, limit: float = 60.0) -> None:
    """Until the scanner's cursor reaches ``head``."""
    query = "SELECT last_scanned_block FROM chain_states WHERE chain = $1"
    async with asyncio.timeout(limit):
        while True:
            at = await listener.conn.fetchval(query, CHAIN)
            if at is not None and at >= head:
                return
            await asyncio.sleep(0.05)


async def until_token_row(listener: Listener, limit: float = 60.0) -> None:
    """Until the scanner has inserted its configured token (it has started)."""
    query = "SELECT count(*) FROM tokens WHERE chain = $1"
    async with asyncio.timeout(limit):
        while True:
            if await listener.conn.fetchval(query, CHAIN):
                return
            await asyncio.sleep(0.05)


def write_config(args: argparse.Namespace, chain: DevChain, token: str, mode: Mode) -> Path:
    folder = Path(args.log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"latency-{mode.name}.toml"
    config.write_text(config_toml(chain, token, mode, chain.head() + 1))
    return config


async def measure(
    chain: DevChain,
    token: str,
    customer: str,
    mode: Mode,
    args: argparse.Namespace,
    offset: int,
) -> list[float]:
    """Latencies (ms) of ``args.samples`` payments under ``mode``."""
    db = await fresh_database("postgresql", workdir(), args.pg_url)
    config = write_config(args, chain, token, mode)
    listener = await Listener.open(db.url)
    out: list[float] = []
    try:
        async with Scanner(config, db.url, config.with_suffix(".log")):
            await until_token_row(listener)
            # addresses of their own per mode: the look-back for payments written behind the
            # cursor would credit them with another mode's transfers
            addresses = [address_of(n + offset) for n in range(args.samples)]
            ids = await write_payments(db.url, chain, token, addresses)
            await asyncio.to_thread(chain.mine, 1)
            await until_scanned(listener, chain.head())  # the payments seen, the scan idle
            for pid, address in zip(ids, addresses, strict=True):
                await asyncio.to_thread(chain.transfer, token, customer, address, AMOUNT)
                await asyncio.sleep(random.uniform(0.2, 0.2 + mode.poll_interval))
                started = time.perf_counter()
                await asyncio.to_thread(chain.mine, 1)
                done = await listener.confirming(uuid.UUID(pid))
                out.append((done - started) * 1000)
    finally:
        await listener.conn.close()
        await db.close()
    return out


def report(mode: Mode, samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    p50, p95 = statistics.median(samples), cuts[94]
    return (
        f"| {mode.name} | {mode.poll_interval:g} s | {len(samples)} | {p50:.0f} | {p95:.0f} | "
        f"{min(samples):.0f}–{max(samples):.0f} | {mode.target()} | "
        f"{'met' if mode.met(p50, p95) else 'not met'} |"
    )


async def main(args: argparse.Namespace) -> None:
    random.seed(args.seed)
    modes = [
        Mode("polling", args.poll_interval, ws=False),
        Mode("ws_url", args.ws_poll_interval, ws=True),
    ]
    with DevChain.start() as chain:
        token = chain.deploy_token("Tether USD", "USDT", 6)
        customer = chain.accounts[1]
        chain.mint(token, customer, 10**15)
        chain.set_automine(False)  # blocks are mined when the sample says so
        rows = [
            (mode, await measure(chain, token, customer, mode, args, n * args.samples))
            for n, mode in enumerate(modes)
        ]
    print("\nmined block -> confirming (PostgreSQL, scanner run in its own process)\n")
    print("| mode | poll_interval | samples | p50 ms | p95 ms | min–max ms | target | |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for mode, samples in rows:
        print(report(mode, samples))
    print(f"\nscanner logs in {args.log_dir}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.latency", description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--poll-interval", type=float, default=1.0, help="polling mode")
    parser.add_argument("--ws-poll-interval", type=float, default=WS_POLL_INTERVAL)
    parser.add_argument("--pg-url", default=PG_ADMIN_URL)
    parser.add_argument("--log-dir", default="/tmp/ctrip-bench-latency")
    parser.add_argument("--seed", type=int, default=8)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
