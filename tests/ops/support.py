"""Shared helpers of the operations tests: a scenario with known payments, row snapshots that
compare two databases, and bounded subprocesses of the real ``scanner`` command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiohttp import web
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from scanner.config import ChainSettings
from scanner.db.models import Payment, PaymentEvent, Token, Transaction
from scanner.devchain import DevChain
from scanner.scan.startup import sync_tokens
from scanner.testkit.gateway import NewPayment, insert_payments, token_row_id
from scanner.testkit.settings import CHAIN
from tests.support.proxy import FaultProxy, Gate
from tests.support.wait import Errors, until_sync

SCANNER = str(Path(sys.executable).with_name("scanner"))
ROOT = Path(__file__).resolve().parents[2]


# -- a scenario with payments in every state ---------------------------------------------------


@dataclass(frozen=True)
class PaymentSpec:
    """A scenario's payment. Its token is named by contract, not by row id: the same payments
    go into two databases, whose ``tokens`` rows have ids of their own."""

    name: str
    id: str
    address: str
    amount: str
    token: str | None  # a token contract, None for the native coin
    created: int
    expires: int

    async def row(self, conn: AsyncConnection) -> NewPayment:
        """The row the gateway writes for it in ``conn``'s database."""
        token = None if self.token is None else await token_row_id(conn, CHAIN, self.token)
        return NewPayment(
            self.id, token, CHAIN, self.address, self.amount, self.expires, self.created
        )


@dataclass
class Scenario:
    payments: list[PaymentSpec] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)  # name -> final status
    transfers: dict[str, int] = field(default_factory=dict)  # name -> transfers credited

    def by_name(self, name: str) -> PaymentSpec:
        return next(p for p in self.payments if p.name == name)


def _addr(n: int) -> str:
    return "0x" + f"{n:02x}" * 20


Step = Callable[[], Awaitable[object]]  # what it returns is left unread
NewPayments = Callable[[list[PaymentSpec]], Awaitable[None]]


async def scenario_in(h: Any) -> Scenario:
    """The scenario on ``h``'s chain, its payments written to ``h``'s database, nothing scanned
    (``h``: a :class:`tests.e2e.harness.Harness`)."""
    await ensure_tokens(h.sessions, h.chain_settings)

    async def created(payments: list[PaymentSpec]) -> None:
        await insert_specs(h.engine, payments)

    return await build_scenario(h.chain, h.token, h.token18, h.customer, on_payments=created)


async def build_scenario(
    chain: DevChain,
    usdt: str,
    dai: str,
    customer: str,
    *,
    on_payments: NewPayments | None = None,
    on_step: Step | None = None,
) -> Scenario:
    """Payments that end confirmed, partially paid (pending), expired underpaid, expired with a
    late transfer, paid in the native coin, overpaid, paid by one batched transaction, and one
    still confirming; ``on_payments`` sees payments when the gateway creates them and
    ``on_step`` runs after each group of blocks (a live scan)."""

    async def step() -> None:
        if on_step is not None:
            await on_step()

    sc = Scenario()
    t0 = int(chain.block("latest")["timestamp"], 16)

    def spec(name: str, n: int, amount: str, token: str | None, life: int, at: int) -> PaymentSpec:
        p = PaymentSpec(name, str(uuid.uuid4()), _addr(n), amount, token, at, at + life)
        sc.payments.append(p)
        return p

    first = [
        spec("confirmed", 0xA1, "25.5", usdt, 3600, t0),
        spec("partial", 0xB2, "10", usdt, 3600, t0),
        spec("underpaid", 0xC3, "5", usdt, 100, t0),
        spec("late", 0xD4, "7", usdt, 100, t0),
        spec("native", 0xE5, "0.5", None, 3600, t0),
        spec("overpaid", 0xF6, "1.000000000000000001", dai, 3600, t0),
        spec("batch1", 0x17, "3", usdt, 3600, t0),
        spec("batch2", 0x28, "4.25", usdt, 3600, t0),
    ]
    if on_payments is not None:
        await on_payments(first)

    def sent(tx_hash: str) -> None:
        chain.wait_receipt(tx_hash)  # automine may answer before the block exists

    chain.mine(1)
    sent(chain.transfer(usdt, customer, sc.by_name("confirmed").address, 25_500_000))
    sent(chain.transfer(usdt, customer, sc.by_name("partial").address, 4_000_000))
    sent(chain.transfer(usdt, customer, sc.by_name("underpaid").address, 2_000_000))
    sent(chain.send_eth(customer, sc.by_name("native").address, 5 * 10**17))
    sent(chain.transfer(dai, customer, sc.by_name("overpaid").address, 2 * 10**18))
    sent(
        chain.batch_transfer(
            usdt,
            customer,
            [sc.by_name("batch1").address, sc.by_name("batch2").address],
            [3_000_000, 4_250_000],
        )
    )
    await step()
    chain.mine(2)
    await step()
    chain.increase_time(200)  # past the expiry of "underpaid" and "late"
    chain.mine(1)
    await step()
    sent(chain.transfer(usdt, customer, sc.by_name("late").address, 7_000_000))
    chain.mine(3)
    await step()
    t1 = int(chain.block("latest")["timestamp"], 16)
    last = [spec("confirming", 0x39, "1", usdt, 3600, t1)]
    if on_payments is not None:
        await on_payments(last)
    chain.mine(1)
    sent(chain.transfer(usdt, customer, sc.by_name("confirming").address, 1_000_000))
    chain.mine(1)  # 2 of 3 confirmations
    await step()
    sc.expected = {
        "confirmed": "confirmed",
        "partial": "pending",
        "underpaid": "expired",
        "late": "expired",
        "native": "confirmed",
        "overpaid": "confirmed",
        "batch1": "confirmed",
        "batch2": "confirmed",
        "confirming": "confirming",
    }
    sc.transfers = {name: 1 for name in sc.expected}
    return sc


# -- the gateway's side --------------------------------------------------------------------------


async def ensure_tokens(sessions: async_sessionmaker[AsyncSession], chain: ChainSettings) -> None:
    """The ``tokens`` rows of ``chain``'s configured tokens, as the scanner writes them when it
    starts (the scanner's own code): a database no scanner has started on yet gets them."""
    async with sessions() as session, session.begin():
        await sync_tokens(session, chain)


async def insert_specs(engine: AsyncEngine, payments: Sequence[PaymentSpec]) -> None:
    """The payments' rows in ``engine``'s database, written by the test kit's gateway
    (:func:`scanner.testkit.gateway.insert_payments`), in one transaction."""
    async with engine.begin() as conn:
        await insert_payments(conn, [await p.row(conn) for p in payments])


# -- comparing databases -------------------------------------------------------------------------

# Bookkeeping, not what the gateway reads: scanner_rev counts the scanner's own writes (batch
# boundaries change how many), edited is cleared within the tick that sees it.
WALL_CLOCK = {"id", "updated_at", "seen_at_block", "scanner_rev", "edited"}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return value.normalize() if value != 0 else Decimal(0)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


async def snapshot(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    """Every row the gateway reads, without ids (token ids become addresses) and wall-clock
    columns; events per payment in id order."""
    async with sessions() as session:
        tokens = {t.id: t.address for t in (await session.execute(select(Token))).scalars()}

        def row(obj: Any, skip: set[str]) -> dict[str, Any]:
            out = {}
            for column in obj.__table__.columns:
                if column.key in skip:
                    continue
                value = getattr(obj, column.key)
                if column.key == "token_id":
                    value = tokens.get(value)
                out[column.key] = _plain(value)
            return out

        payments = {
            str(p.id): row(p, WALL_CLOCK)
            for p in (await session.execute(select(Payment))).scalars()
        }
        txs = sorted(
            (
                row(t, WALL_CLOCK | {"created_at"})
                for t in (await session.execute(select(Transaction))).scalars()
            ),
            key=lambda r: (r["block_number"], r["log_index"], r["tx_hash"]),
        )
        events: dict[str, list[tuple[Any, ...]]] = {}
        for e in (await session.execute(select(PaymentEvent).order_by(PaymentEvent.id))).scalars():
            events.setdefault(str(e.payment_id), []).append(
                (e.type, e.status_from, e.status_to, json.dumps(e.data, sort_keys=True))
            )
    return {"payments": payments, "transactions": txs, "events": events}


async def count_rows(engine: AsyncEngine) -> dict[str, int]:
    tables = (
        "tokens",
        "payments",
        "transactions",
        "payment_events",
        "chain_states",
        "blocks",
        "backfill_jobs",
    )
    async with engine.connect() as conn:
        return {
            t: int((await conn.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one())
            for t in tables
        }


async def chain_state_rows(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT chain, last_scanned_block, last_scanned_hash, updated_at FROM chain_states"
            )
        )
        return [tuple(r) for r in rows]


# -- subprocesses --------------------------------------------------------------------------------


def write_config(
    path: Path,
    rpc_url: str,
    tokens: Sequence[tuple[str, str, int]],
    *,
    chain_id: int = 31337,
    metrics_port: int | None = None,
    level: str = "info",
    extra_chain: str = "",
    extra_top: str = "",
    database_url: str | None = None,
    confirmations: int = 3,
    poll_interval: float = 0.2,
    batch_size: int = 50,
    more_rpc_urls: Sequence[str] = (),
) -> Path:
    lines = [extra_top]
    if database_url is not None:
        lines += ["[database]", f"url = {json.dumps(database_url)}"]
    lines += [f'[logging]\nlevel = "{level}"\nformat = "json"']
    if metrics_port is None:
        lines += ["[metrics]\nenabled = false"]
    else:
        lines += [f'[metrics]\nhost = "127.0.0.1"\nport = {metrics_port}']
    lines += [
        "[[chains]]",
        f'name = "{CHAIN}"',
        f"chain_id = {chain_id}",
        f"rpc_urls = {json.dumps([rpc_url, *more_rpc_urls])}",
        f"confirmations = {confirmations}",
        f"poll_interval = {poll_interval}",
        f"batch_size = {batch_size}",
        "start_block = 0",
        "rpc_max_attempts = 2",
        "rpc_timeout = 5.0",
        extra_chain,
    ]
    for symbol, address, decimals in tokens:
        lines += [
            "[[chains.tokens]]",
            f'symbol = "{symbol}"',
            f'address = "{address}"',
            f"decimals = {decimals}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def scanner_env(db_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SCANNER_", "DATABASE_URL", "NOTIFY_SOCKET", "WATCHDOG_"))
    }
    env["ENV"] = "testing"
    env["PYTHONUNBUFFERED"] = "1"
    if db_url is not None:
        env["DATABASE_URL_DEV"] = db_url
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str], env: dict[str, str], *, timeout: float = 30.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``scanner ARGS`` to completion (killed at ``timeout``), stdout and stderr captured."""
    return subprocess.run(
        [SCANNER, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


class ScannerProcess:
    """A running ``scanner``; its stdout and stderr go to files (a pipe nobody reads would
    block a chatty process), read back with :meth:`out` and :meth:`err`."""

    def __init__(self, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.proc = proc
        self._out, self._err = out, err

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        return self.proc.poll()

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def out(self) -> str:
        return self._out.read_text(encoding="utf-8", errors="replace")

    def err(self) -> str:
        return self._err.read_text(encoding="utf-8", errors="replace")

    def exit_within(self, seconds: float) -> tuple[int, float]:
        """Wait at most ``seconds`` for the exit; its code and how long it took."""
        started = time.monotonic()
        try:
            code = self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running after {seconds} s:\n{self.err()[-3000:]}"
            ) from None
        return code, time.monotonic() - started


@contextmanager
def scanner_process(
    args: Sequence[str], env: dict[str, str], *, cwd: Path | None = None
) -> Iterator[ScannerProcess]:
    """A running ``scanner ARGS`` (its own process group); killed on the way out if alive."""
    logs = Path(tempfile.mkdtemp(prefix="scanner-proc-"))
    out, err = logs / "stdout", logs / "stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [SCANNER, *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        yield ScannerProcess(proc, out, err)
    finally:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        shutil.rmtree(logs, ignore_errors=True)


def json_lines(text_: str) -> list[dict[str, Any]]:
    out = []
    for line in text_.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


# -- a proxy that knows which block ranges were read ---------------------------------------------


class RangeProxy(FaultProxy):
    """A :class:`FaultProxy` that records the ``eth_getLogs`` ranges asked for and can hold the
    first request whose range starts at or above a block (to stop a scan at a chosen range)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.log_ranges: list[tuple[int, int]] = []
        self._hold_from: int | None = None
        self._range_gate: Gate | None = None

    def hold_logs_from(self, block: int) -> Gate:
        gate = Gate()
        self._gates.append(gate)
        self._hold_from, self._range_gate = block, gate
        return gate

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()  # aiohttp keeps the body: the parent reads it again
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = []
        items = body if isinstance(body, list) else [body]
        held = False
        for item in items:
            if not isinstance(item, dict) or item.get("method") != "eth_getLogs":
                continue
            flt = (item.get("params") or [{}])[0]
            if "blockHash" in flt:  # near the head, logs are read by block hash (EIP-234)
                block = await self._upstream(
                    [
                        {
                            "jsonrpc": "2.0",
                            "id": 0,
                            "method": "eth_getBlockByHash",
                            "params": [flt["blockHash"], False],
                        }
                    ]
                )
                start = end = int(block[0]["result"]["number"], 16)
            elif "fromBlock" in flt:
                start, end = int(flt["fromBlock"], 16), int(flt["toBlock"], 16)
            else:
                continue
            self.log_ranges.append((start, end))
            if self._hold_from is not None and start >= self._hold_from:
                held = True
        if held and self._range_gate is not None:
            gate, self._hold_from, self._range_gate = self._range_gate, None, None
            await gate._pass()
        return await super()._handle(request)


def _row_diff(label: str, got: dict[str, Any] | None, want: dict[str, Any] | None) -> str:
    a, b = got or {}, want or {}
    keys = sorted(set(a) | set(b))
    return f"{label}: " + ", ".join(
        f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)
    )


def differences(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """What differs between two :func:`snapshot`s, one line per row (empty: the same)."""
    out: list[str] = []
    for pid in sorted(set(got["payments"]) | set(want["payments"])):
        a, b = got["payments"].get(pid), want["payments"].get(pid)
        if a != b:
            out.append(_row_diff(f"payment {pid}", a, b))
    a_txs = {(t["tx_hash"], t["log_index"]): t for t in got["transactions"]}
    b_txs = {(t["tx_hash"], t["log_index"]): t for t in want["transactions"]}
    for key in sorted(set(a_txs) | set(b_txs)):
        a, b = a_txs.get(key), b_txs.get(key)
        if a != b:
            out.append(_row_diff(f"transaction {key[0][:10]}/{key[1]}", a, b))
    if len(got["transactions"]) != len(want["transactions"]):
        out.append(f"{len(got['transactions'])} transactions != {len(want['transactions'])}")
    for pid in sorted(set(got["events"]) | set(want["events"])):
        a, b = got["events"].get(pid, []), want["events"].get(pid, [])
        if a != b:
            out.append(f"events of {pid}:\n  got  {a}\n  want {b}")
    return out


# -- sd_notify, HTTP ------------------------------------------------------------------------------


class NotifyListener:
    """An AF_UNIX datagram socket (as systemd's NOTIFY_SOCKET) that keeps what arrives."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")  # short: sun_path is 108 bytes
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def drain(self) -> None:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        """The first message, kept or arriving within ``timeout`` s, that ``predicate`` takes."""

        def found() -> str | None:
            self.drain()
            return next((m for m in self.messages if predicate(m)), None)

        message: str = until_sync(
            found, timeout, "a matching sd_notify message", detail=lambda: self.messages
        )
        return message

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# What :func:`http_get` raises while the server is not up yet: a wait on it ignores these.
NOT_LISTENING: Errors = (httpx.HTTPError, OSError)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    response = httpx.get(url, timeout=timeout)
    return response.status_code, response.text
