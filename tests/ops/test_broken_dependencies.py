"""Every command against each broken dependency, as real processes: the database down (a closed
port), wrong credentials (a role that does not exist), the RPC node down, the metrics port
taken. Each ends with the exit code docs/operations.md gives and one line that says what is
wrong (beside the JSON log records), never a traceback, never a secret."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from scanner.devchain.node import free_port
from tests.conftest import BACKENDS
from tests.e2e.harness import Harness
from tests.ops.support import (
    NotifyListener,
    ScannerProcess,
    http_get,
    json_lines,
    run_cli,
    scanner_env,
    scanner_process,
    write_config,
)
from tests.support.hostile import HostileNode, drip
from tests.support.proxy import FaultProxy, ThreadedProxy
from tests.support.wait import until_sync

pytestmark = [pytest.mark.slow, pytest.mark.long(60)]
SQLITE_ONLY = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
DB_SECRET = "s3cretPassw0rd"
RPC_SECRET = "rpcKey0123456789abcdef"
TOKENS = [("USDT", "0x" + "11" * 20, 6)]

COMMANDS: dict[str, list[str]] = {
    "run": ["run"],
    "backfill": ["backfill", "--chain", "anvil", "--from-block", "1", "--to-block", "2"],
    "status": ["status"],
    "rewind": ["rewind", "--chain", "anvil", "--to-block", "1"],
    "migrate": ["migrate", "current"],
}


def closed_port() -> int:
    return free_port()  # bound and released at once: nothing listens there


def problem_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What the process said beside its JSON log records."""
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    return [ln for ln in lines if not _is_record(ln)]


def _is_record(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    everything = result.stdout + result.stderr
    assert result.returncode == code, everything[-2000:]
    assert "Traceback" not in everything, everything[-3000:]
    assert DB_SECRET not in everything and RPC_SECRET not in everything, everything
    (line,) = problem_lines(result)
    assert line.startswith("scanner: "), line
    for needle in needles:
        assert needle in line, line
    return line


def run_with(command: str, config: Path, db_url: str) -> subprocess.CompletedProcess[str]:
    args = COMMANDS[command]
    if command == "migrate":
        args = ["migrate", "--config", str(config), *args[1:]]
    else:
        args = [args[0], "--config", str(config), *args[1:]]
    return run_cli(args, scanner_env(db_url), timeout=60)


@pytest.fixture
def rpc_down_config(tmp_path: Path) -> Path:
    url = f"http://127.0.0.1:{closed_port()}/v3/{RPC_SECRET}"
    return write_config(tmp_path / "scanner.toml", url, TOKENS)


def broken_databases() -> Iterator[tuple[str, str, str]]:
    yield (
        "down",
        f"postgresql://scanner:{DB_SECRET}@127.0.0.1:{closed_port()}/payments",
        "ConnectionRefused",
    )
    if "postgresql" in BACKENDS:
        role = f"nosuchrole{os.getpid()}"
        yield "credentials", f"postgresql://{role}:{DB_SECRET}@127.0.0.1:5432/nosuchdb", role


@pytest.mark.parametrize(
    ("what", "url", "says"),
    [pytest.param(*case, id=case[0]) for case in broken_databases()],  # ids the same per worker
)
async def test_every_command_with_the_database_broken_exits_1_in_one_line(
    what: str, url: str, says: str, rpc_down_config: Path
) -> None:
    results = await asyncio.gather(
        *(asyncio.to_thread(run_with, c, rpc_down_config, url) for c in COMMANDS)
    )
    for command, result in zip(COMMANDS, results, strict=True):
        line = assert_one_line(result, 1, "database postgresql://", says)
        assert "***" in line, (command, line)
    check = run_cli(["check", "--config", str(rpc_down_config)], scanner_env(url))
    assert check.returncode == 1 and "Traceback" not in check.stdout + check.stderr
    assert DB_SECRET not in check.stdout + check.stderr
    (problem,) = [ln for ln in check.stdout.splitlines() if ln.startswith("problem: database")]
    assert says in problem


@SQLITE_ONLY
async def test_every_command_with_the_rpc_node_down(db_url: str, rpc_down_config: Path) -> None:
    one_shot = ["backfill", "rewind"]
    results = await asyncio.gather(
        *(asyncio.to_thread(run_with, c, rpc_down_config, db_url) for c in one_shot)
    )
    for result in results:
        assert_one_line(result, 1, "eth_chainId", "http://127.0.0.1:")
    status = run_with("status", rpc_down_config, db_url)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[1].split()[:2] == ["anvil", "-"]  # no head: shown as -
    check = run_cli(["check", "--config", str(rpc_down_config)], scanner_env(db_url))
    assert check.returncode == 1 and RPC_SECRET not in check.stdout + check.stderr


@SQLITE_ONLY
def test_run_with_the_rpc_node_down_keeps_trying_and_is_never_ready(
    db_url: str, rpc_down_config: Path
) -> None:
    """READY=1 only after the first head of every chain was read."""
    listener = NotifyListener()
    try:
        env = scanner_env(db_url, NOTIFY_SOCKET=listener.path)
        with scanner_process(["run", "--config", str(rpc_down_config)], env) as proc:
            until_sync(
                lambda: [e for e in json_lines(proc.err()) if e.get("event") == "chain_error"],
                20,
                what="a failed first head",
            )
            listener.drain()
            assert proc.poll() is None  # a transient failure: it keeps trying
            assert not any("READY=1" in m for m in listener.messages), listener.messages
            assert RPC_SECRET not in proc.err()
    finally:
        listener.close()


@SQLITE_ONLY
def test_run_with_the_metrics_port_taken_exits_2_naming_the_address(
    db_url: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        url = f"http://127.0.0.1:{closed_port()}/v3/{RPC_SECRET}"
        config = write_config(tmp_path / "scanner.toml", url, TOKENS, metrics_port=port)
        result = run_cli(["run", "--config", str(config)], scanner_env(db_url), timeout=60)
    # what a taken port most often means: a second scanner on this host, which needs its own
    assert_one_line(result, 2, f"127.0.0.1:{port}", "another `scanner run` on this host")


@SQLITE_ONLY
async def test_rewind_usage_errors_exit_2(h: Harness, db_url: str, tmp_path: Path) -> None:
    await h.scan()
    config = write_config(tmp_path / "scanner.toml", h.chain.url, [("USDT", h.token, 6)])
    head = h.chain.head()

    def rewind(to: int) -> subprocess.CompletedProcess[str]:
        args = ["rewind", "--config", str(config), "--chain", "anvil", "--to-block", str(to)]
        return run_cli(args, scanner_env(db_url))

    negative, above = await asyncio.gather(
        asyncio.to_thread(rewind, -1), asyncio.to_thread(rewind, head + 100)
    )
    assert_one_line(negative, 2, "--to-block -1", "negative")
    assert_one_line(above, 2, f"--to-block {head + 100}", f"head {head}")


@SQLITE_ONLY
async def test_check_against_a_node_dripping_its_answers_ends_within_rpc_timeout(
    db_url: str, tmp_path: Path
) -> None:
    """A byte a second keeps each of httpx's reads alive; ``rpc_timeout = 5`` bounds the whole
    attempt, so ``check`` names the node within seconds instead of hanging."""
    async with HostileNode() as node:
        for method in ("eth_chainId", "eth_blockNumber", "eth_call"):
            node.handlers[method] = lambda request, body: node.stream(request, drip(1.0))
        url = f"{node.url}/v3/{RPC_SECRET}"
        config = write_config(tmp_path / "scanner.toml", url, TOKENS)  # rpc_timeout = 5.0
        started = time.monotonic()
        check = await asyncio.to_thread(
            run_cli, ["check", "--config", str(config)], scanner_env(db_url), timeout=30
        )
    assert time.monotonic() - started < 20
    assert check.returncode == 1, check.stdout + check.stderr
    (problem,) = [ln for ln in check.stdout.splitlines() if ln.startswith("problem: anvil")]
    assert "eth_chainId" in problem and "no whole answer within 5 s" in problem
    assert RPC_SECRET not in check.stdout + check.stderr


# What a node whose every answer fails can say (a revoked key, a broken provider), and the words
# of the chain_error each one causes.
REFUSALS: list[tuple[str, Callable[[FaultProxy], object]]] = [
    ("HTTP 401", lambda p: p.fail_http("*", 401, body=b"invalid api key")),
    ("HTTP 500", lambda p: p.fail_http("*", 500)),
    ("not JSON", lambda p: p.malformed("*")),
    ("project id revoked", lambda p: p.rpc_error("*", "project id revoked")),
]


def test_run_with_a_node_refusing_every_answer_is_never_ready(db_url: str, tmp_path: Path) -> None:
    """The chain never scans: ``/readyz`` says so (not a standby: no other instance holds the
    chain, on PostgreSQL as on SQLite), whatever the node answers, for as long as it runs."""
    tp = ThreadedProxy("http://127.0.0.1:1")  # nothing is forwarded: every answer is a fault
    tp.start()
    port = free_port()
    config = write_config(
        tmp_path / "scanner.toml", f"{tp.url}/v3/{RPC_SECRET}", TOKENS, metrics_port=port
    )
    try:
        with scanner_process(["run", "--config", str(config)], scanner_env(db_url)) as proc:
            for words, refuse in REFUSALS:
                tp.proxy.reset()
                refuse(tp.proxy)
                until_sync(partial(_chain_errors, proc, words), 40, what=words)
                status, body = http_get(f"http://127.0.0.1:{port}/readyz")
                ready = json.loads(body)
                chain = ready["chains"]["anvil"]
                assert status == 503 and ready["ready"] is False, (words, body)
                assert chain["standby"] is False and chain["ticks"] == 0, (words, body)
                (reason,) = ready["reasons"]  # not scanned yet, then no tick done for N s
                assert reason.startswith("chain anvil: no"), (words, body)
            assert proc.poll() is None and RPC_SECRET not in proc.err()
    finally:
        tp.stop()


def _chain_errors(proc: ScannerProcess, words: str) -> list[dict[str, object]]:
    events = json_lines(proc.err())
    return [e for e in events if e.get("event") == "chain_error" and words in str(e["message"])]
