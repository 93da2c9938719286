"""Several ``scanner run`` instances share the chains on one PostgreSQL, with real processes:
the chains are spread, a killed holder's chains are scanned again within 15 s, a stopped one
(SIGSTOP) loses its chains and writes nothing stale when it wakes, a newcomer takes its share,
``scanner status --json`` names each holder, and the final rows equal one clean instance's.

Six chains, each on an anvil of its own, every one with its own payments."""

from __future__ import annotations

import json
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.config import ChainSettings
from scanner.devchain import DevChain
from scanner.testkit.gateway import NewPayment, insert_payments, token_row_id
from tests.conftest import BACKENDS
from tests.e2e.actions import pay
from tests.e2e.harness import Harness
from tests.ops.support import (
    NOT_LISTENING,
    ScannerProcess,
    differences,
    ensure_tokens,
    http_get,
    json_lines,
    run_cli,
    scanner_env,
    scanner_process,
    snapshot,
)
from tests.ops.support import write_config as support_config
from tests.support.proxy import ThreadedProxy
from tests.support.wait import until, until_sync

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True),
    pytest.mark.skipif("postgresql" not in BACKENDS, reason="several instances need PostgreSQL"),
]
NAMES = [[f"c{n}"] for n in range(1, 7)]  # per anvil: one chain each
USDT = 10**6


def write_config(path: Path, nodes: Sequence[tuple[DevChain, str]]) -> Path:
    lines = ['[logging]\nlevel = "info"\nformat = "json"', "[metrics]\nenabled = false"]
    for (node, token), names in zip(nodes, NAMES, strict=True):
        for name in names:
            lines += [
                "[[chains]]",
                f'name = "{name}"',
                "chain_id = 31337",
                f"rpc_urls = {json.dumps([node.url])}",
                "confirmations = 3\npoll_interval = 0.2\nbatch_size = 50\nstart_block = 0",
                "rpc_max_attempts = 2\nrpc_timeout = 5.0",
                "[[chains.tokens]]",
                f'symbol = "USDT"\naddress = "{token}"\ndecimals = 6',
            ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def address(chain: str, n: int) -> str:
    return "0x" + f"{int(chain[1:]):02x}{n:02x}" * 10


class Gateway:
    """Payments on every chain, written to both databases with the same ids and times."""

    def __init__(self, nodes: Sequence[tuple[DevChain, str]]) -> None:
        self.nodes = nodes
        self.rows: list[tuple[str, str, str, int]] = []  # (id, chain, address, created)

    def chains(self) -> Iterator[tuple[DevChain, str, str]]:
        for (node, token), names in zip(self.nodes, NAMES, strict=True):
            for name in names:
                yield node, token, name

    def create(self, n: int) -> None:
        for node, _, name in self.chains():
            created = int(node.block("latest")["timestamp"], 16)
            self.rows.append((str(uuid.uuid4()), name, address(name, n), created))

    async def write(self, engine: AsyncEngine, tokens: dict[str, str]) -> None:
        async with engine.begin() as conn:
            payments = [
                NewPayment(
                    pid,
                    await token_row_id(conn, chain, tokens[chain]),
                    chain,
                    addr,
                    "5",
                    created + 3600,
                    created,
                )
                for pid, chain, addr, created in self.rows
            ]
            await insert_payments(conn, payments)

    def pay(self, n: int, amount: int) -> None:
        for node, token, name in self.chains():
            node.wait_receipt(node.transfer(token, node.accounts[1], address(name, n), amount))


def holders(env: dict[str, str], config: Path) -> dict[str, Any]:
    done = run_cli(["status", "--json", "--config", str(config)], env)
    assert done.returncode == 0, done.stderr
    return {row["chain"]: row["holder"] for row in json.loads(done.stdout)}


def spread(held: dict[str, Any]) -> Counter[int]:
    return Counter(h["pid"] for h in held.values() if h is not None)


async def cursors(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT chain, last_scanned_block FROM chain_states"))
        return {str(c): int(b) for c, b in rows}


@contextmanager
def instances() -> Iterator[Any]:
    with ExitStack() as stack:
        yield lambda args, env: stack.enter_context(scanner_process(args, env))


def _after(proc: ScannerProcess, mark: int) -> list[dict[str, Any]]:
    return json_lines(proc.err()[mark:])


async def test_three_instances_share_six_chains_through_kill_stop_and_a_newcomer(
    tmp_path: Path,
    db_url: str,
    other_db_url: str,
    engine: AsyncEngine,
    other_engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    other_sessions: async_sessionmaker[AsyncSession],
) -> None:
    with ExitStack() as stack:
        nodes = []
        for node in [stack.enter_context(DevChain.start()) for _ in NAMES]:
            token = node.deploy_token("Tether USD", "USDT", 6)
            node.mint(token, node.accounts[1], 10**12)
            nodes.append((node, token))
        config = write_config(tmp_path / "scanner.toml", nodes)
        gateway = Gateway(nodes)
        tokens = {name: tok for (_, tok), names in zip(nodes, NAMES, strict=True) for name in names}
        for _, token, name in gateway.chains():
            chain = ChainSettings.model_validate(
                {
                    "name": name,
                    "chain_id": 31337,
                    "rpc_urls": ["http://x"],
                    "confirmations": 3,
                    "tokens": [{"symbol": "USDT", "address": token, "decimals": 6}],
                }
            )
            for sessions in (session_factory, other_sessions):
                await ensure_tokens(sessions, chain)
        for n in (1, 2, 3):
            gateway.create(n)
        for e in (engine, other_engine):
            await gateway.write(e, tokens)
        env = scanner_env(db_url)
        await _run_the_cluster(gateway, config, env, engine)
        await _scan_once(config, scanner_env(other_db_url), other_engine, nodes)
    got, want = await snapshot(session_factory), await snapshot(other_sessions)
    assert not differences(got, want), differences(got, want)
    # every transfer credited once: 6 chains x (1 + 2 + 1); every payment confirmed
    assert len(got["transactions"]) == 24
    assert {p["status"] for p in got["payments"].values()} == {"confirmed"}
    credited = Counter(t["payment_id"] for t in got["transactions"])
    assert sorted(credited.values()) == [1] * 12 + [2] * 6


async def _at_heads(engine: AsyncEngine, nodes: Sequence[tuple[DevChain, str]]) -> bool:
    at = await cursors(engine)
    heads = {
        name: node.head() for (node, _), names in zip(nodes, NAMES, strict=True) for name in names
    }
    return all(at.get(name, -1) >= head for name, head in heads.items())


async def _wait_heads(engine: AsyncEngine, nodes: Any, seconds: float, what: str) -> float:
    """Seconds until every chain is scanned to its node's head."""
    started = time.monotonic()
    await until(lambda: _at_heads(engine, nodes), seconds, f"{what}: every chain at its head", 0.2)
    return time.monotonic() - started


async def _run_the_cluster(
    gateway: Gateway, config: Path, env: dict[str, str], engine: AsyncEngine
) -> None:
    nodes = gateway.nodes
    args = ["run", "--config", str(config)]
    with instances() as start:
        a, b, c = (start(args, env) for _ in range(3))
        settled = until_sync(
            lambda: (s := spread(holders(env, config))) and sorted(s.values()) == [2, 2, 2] and s,
            40,
            every=0.5,
            what="six chains spread over three instances",
        )
        assert set(settled) == {a.proc.pid, b.proc.pid, c.proc.pid}
        gateway.pay(1, 5 * USDT)
        await _wait_heads(engine, nodes, 30, "three instances")
        await _kill_a_holder(a, nodes, env, config, engine)
        mark = await _stop_a_holder(b, c, gateway, env, config, engine)
        b.send_signal(signal.SIGCONT)
        d = start(args, env)
        until_sync(
            lambda: sorted(spread(holders(env, config)).values()) == [2, 2, 2],
            40,
            every=0.5,
            what="six chains spread again over b, c and the newcomer d",
        )
        gateway.pay(2, 2 * USDT)
        gateway.pay(3, 6 * USDT)
        for node, _ in nodes:
            node.mine(4)  # every transfer final
        await _wait_heads(engine, nodes, 30, "three instances again")
        _nothing_stale(_after(b, mark))
        for proc in (b, c, d):
            proc.send_signal(signal.SIGTERM)
        for proc in (b, c, d):
            assert proc.exit_within(20)[0] == 0
    assert all(h is None for h in holders(env, config).values()), "handed over on exit"


async def _kill_a_holder(
    a: ScannerProcess, nodes: Any, env: dict[str, str], config: Path, engine: AsyncEngine
) -> None:
    """kill -9: its chains are scanned again by the others within 15 s."""
    held = holders(env, config)
    a_chains = sorted(ch for ch, h in held.items() if h["pid"] == a.proc.pid)
    a.send_signal(signal.SIGKILL)
    for node, _ in nodes:
        node.mine(1)
    took = await _wait_heads(engine, nodes, 15, "after kill -9 of a holder")
    assert took < 15, took
    held = holders(env, config)
    assert all(held[ch] is not None and held[ch]["pid"] != a.proc.pid for ch in a_chains)


async def _stop_a_holder(
    b: ScannerProcess,
    c: ScannerProcess,
    gateway: Gateway,
    env: dict[str, str],
    config: Path,
    engine: AsyncEngine,
) -> int:
    """SIGSTOP: its leases expire, the one live instance holds every chain and scans on; where
    the stopped one's log stood (what it writes after SIGCONT is checked from there)."""
    b.send_signal(signal.SIGSTOP)
    until_sync(
        lambda: spread(holders(env, config)) == {c.proc.pid: 6},
        30,
        every=0.5,
        what="the one live instance holds every chain",
    )
    gateway.pay(2, 3 * USDT)
    # Stopped inside a chain transaction, it holds the chain's transaction lock until the server
    # ends that transaction (idle_in_transaction_session_timeout, 16 s here): allow for it.
    await _wait_heads(engine, gateway.nodes, 30, "one live instance")
    return len(b.err())


def _nothing_stale(events: list[dict[str, Any]]) -> None:
    """The woken instance scanned no chain before it took a lease on it again."""
    leased: set[str] = set()
    for event in events:
        if event.get("event") == "chain_lease_acquired":
            leased.add(str(event["chain"]))
        if event.get("event") == "range_scanned":
            assert event["chain"] in leased, f"stale write after SIGCONT: {event}"


async def _scan_once(config: Path, env: dict[str, str], engine: AsyncEngine, nodes: Any) -> None:
    with scanner_process(["run", "--config", str(config)], env) as single:
        await _wait_heads(engine, nodes, 60, "a clean single instance")
        single.send_signal(signal.SIGTERM)
        assert single.exit_within(20)[0] == 0


async def test_a_standby_instance_is_ready_on_a_metrics_port_of_its_own(
    h: Harness, db_url: str, tmp_path: Path
) -> None:
    await h.scan()
    config = support_config(
        tmp_path / "scanner.toml", h.chain.url, [("USDT", h.token, 6)], metrics_port=9
    )
    env = scanner_env(db_url, SCANNER_METRICS_ADDR="127.0.0.1:0")  # wins over the file's
    args = ["run", "--config", str(config)]
    with scanner_process(args, env) as first:
        until_sync(lambda: _named(first, "chain_lease_acquired"), 20, what="first holds")
        with scanner_process(args, env) as second:
            until_sync(lambda: _named(second, "chain_held_elsewhere"), 20, what="standby")
            ports = [int(_named(p, "metrics_serving")[0]["port"]) for p in (first, second)]
            assert 0 not in ports and ports[0] != ports[1]
            status, body = http_get(f"http://127.0.0.1:{ports[1]}/readyz")
            assert status == 200, body  # holds nothing: a ready standby
            assert json.loads(body)["chains"]["anvil"]["standby"] is True
            until_sync(
                lambda: http_get(f"http://127.0.0.1:{ports[0]}/readyz")[0] == 200,
                20,
                what="ready",
                ignoring=NOT_LISTENING,
            )
            table = run_cli(["status", "--config", str(config)], env)
            assert f":{first.proc.pid} (" in table.stdout.splitlines()[1], table.stdout
            held = holders(env, config)["anvil"]
            assert held["pid"] == first.proc.pid and held["host"] == socket.gethostname()
            assert held["lease_expires_at"][:4].isdigit() and len(held["instance"]) == 36


def _named(proc: ScannerProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in json_lines(proc.err()) if e.get("event") == name]


async def test_a_holder_frozen_with_a_range_in_flight_writes_nothing_when_it_wakes(
    h: Harness, db_url: str, tmp_path: Path
) -> None:
    """SIGSTOP while its node read of a range is held (a proxy gate): the lease expires and the
    other instance takes the chain, its own read held in turn, so the cursor has not moved when
    the frozen holder wakes (SIGCONT) with the range in hand: only the fence stops that commit.
    Then the other instance scans the range and credits the payment, once."""
    paid = await h.create_payment("0x" + "a1" * 20, "1")
    tokens = [("USDT", h.token, 6)]
    cluster = "[cluster]\nlease_seconds = 2.0"
    env = scanner_env(db_url)
    with ThreadedProxy(h.chain.url) as tp, ThreadedProxy(h.chain.url) as op:
        slow = support_config(
            tmp_path / "slow.toml", tp.url, tokens, poll_interval=0.1, extra_top=cluster
        )
        direct = support_config(
            tmp_path / "direct.toml", op.url, tokens, poll_interval=0.1, extra_top=cluster
        )
        with scanner_process(["run", "--config", str(slow)], env) as frozen:
            until_sync(lambda: _named(frozen, "chain_lease_acquired"), 20, what="it holds")
            h.mine(1)
            until_sync(lambda: _named(frozen, "range_scanned"), 20, what="it scans")
            gate = tp.proxy.hold("eth_getLogs")
            pay(h, "0x" + "a1" * 20, 1_000_000)
            assert gate.wait_reached_sync(20), "the range's read is held"
            frozen.send_signal(signal.SIGSTOP)
            other_gate = op.proxy.hold("eth_getLogs")
            with scanner_process(["run", "--config", str(direct)], env) as other:
                until_sync(lambda: _named(other, "chain_lease_acquired"), 30, what="taken over")
                assert other_gate.wait_reached_sync(20), "the new holder's read is held"
                mark = len(frozen.err())
                gate.release()
                frozen.send_signal(signal.SIGCONT)
                until_sync(  # its tick with the stale range has ended: it stands by
                    lambda: any(
                        e.get("event") == "chain_held_elsewhere" for e in _after(frozen, mark)
                    ),
                    20,
                    what="the woken holder finds its lease gone",
                )
                stale = [
                    e.get("event")
                    for e in _after(frozen, mark)
                    if e.get("event") in ("range_scanned", "transfer_detected")
                ]
                assert not stale, stale
                other_gate.release()
                until_sync(lambda: _named(other, "transfer_detected"), 30, what="it credits")
                h.mine(3)
                until_sync(lambda: len(_named(other, "range_scanned")) >= 2, 20, what="goes on")
                for proc in (frozen, other):
                    proc.send_signal(signal.SIGTERM)
                for proc in (frozen, other):
                    assert proc.exit_within(20)[0] == 0
    (credit,) = await h.transactions(paid)
    assert credit["value"] == 1_000_000
    assert [e[0] for e in await h.events(paid)].count("transfer_detected") == 1
