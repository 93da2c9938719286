"""No secret in any line a scanner process writes: a password in the PostgreSQL URL and an API
key in the RPC URL's path and query, at log level debug, through RPC failures (one provider
echoes the key in its error body), for ``run``, ``check``, ``status`` and failing backfills."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import make_url

from scanner.devchain.node import free_port
from scanner.testkit.postgres import pg_execute
from tests.conftest import BACKENDS, _block_on, pg_admin
from tests.e2e.harness import Harness
from tests.ops.support import (
    NOT_LISTENING,
    PaymentSpec,
    ensure_tokens,
    http_get,
    insert_specs,
    run_cli,
    scanner_env,
    scanner_process,
    write_config,
)
from tests.support.proxy import ThreadedProxy
from tests.support.wait import until_sync

PASSWORD = "S3cretPassw0rd_xyz"
API_KEY = "APIKEY_abcdef1234567890"
QUERY_KEY = "QKEY_0987654321"
FORBIDDEN = (PASSWORD, API_KEY, QUERY_KEY, "S3cretPassw0rd", "abcdef1234567890", "0987654321")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True),
    pytest.mark.skipif("postgresql" not in BACKENDS, reason="needs PostgreSQL"),
]


@pytest.fixture
def secret_db_url(db_url: str) -> Iterator[str]:
    """``db_url`` reached as a role of its own, with a password in the URL."""
    role = f"scanner_secret_{os.getpid()}"
    database = make_url(db_url).database

    pg_admin(
        f'DROP ROLE IF EXISTS "{role}"',
        f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{PASSWORD}'",
        f'GRANT ALL PRIVILEGES ON DATABASE "{database}" TO "{role}"',
    )
    _block_on(
        lambda: pg_execute(
            db_url,
            f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"',
            f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"',
        )
    )
    try:
        yield (
            make_url(db_url)
            .set(username=role, password=PASSWORD)
            .render_as_string(hide_password=False)
        )
    finally:
        pg_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        _block_on(lambda: pg_execute(db_url, f'DROP OWNED BY "{role}"'))
        pg_admin(f'DROP ROLE IF EXISTS "{role}"')


def leaks(name: str, *texts: str) -> list[str]:
    """Every line of ``texts`` that shows a secret (or a recognisable piece of one)."""
    return [
        f"{name}: {line[:300]}"
        for text in texts
        for line in text.splitlines()
        if any(secret in line for secret in FORBIDDEN)
    ]


def page(url: str) -> str:
    """The body of a GET (empty while the server has nothing to say yet)."""
    return http_get(url)[1]


def secret_rpc(base: str) -> str:
    return f"{base}/v3/{API_KEY}?key={QUERY_KEY}"


def faulty_proxy(upstream: str) -> ThreadedProxy:
    """A provider that fails now and then, and echoes the key in its error bodies."""
    tp = ThreadedProxy(upstream)
    tp.start()
    echo = f"invalid project id {API_KEY} (key={QUERY_KEY})".encode()
    tp.proxy.fail_http("eth_getLogs", 500, times=2, body=echo)
    tp.proxy.fail_http("eth_blockNumber", 503, times=1, body=echo)
    tp.proxy.rpc_error("eth_getBlockByNumber", f"bad key {API_KEY}", times=1)
    return tp


async def test_no_secret_in_any_line_written(
    h: Harness, secret_db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    tp = faulty_proxy(h.chain.url)
    broken = ThreadedProxy(h.chain.url)
    broken.start()
    broken.proxy.fail_http("*", 500, body=f"invalid project id {API_KEY}".encode())
    found: list[str] = []
    try:
        config = write_config(
            tmp_path / "scanner.toml",
            secret_rpc(tp.url),
            [("USDT", h.token, 6)],
            metrics_port=port,
            level="debug",
        )
        env = scanner_env(secret_db_url)
        base = f"http://127.0.0.1:{port}"
        with scanner_process(["run", "--config", str(config)], env) as proc:
            await ensure_tokens(h.sessions, h.chain_settings)
            now = h.now()
            pid, address = str(uuid.uuid4()), "0x" + "7a" * 20
            await insert_specs(
                h.engine, [PaymentSpec("p", pid, address, "3", h.token, now, now + 3600)]
            )
            h.chain.wait_receipt(h.chain.transfer(h.token, h.customer, address, 3_000_000))
            h.chain.mine(3)

            await h.until_status(pid, "confirmed", 15, 0.1, lambda: proc.err()[-3000:])
            pages = [
                await asyncio.to_thread(
                    until_sync, partial(page, base + p), 5.0, ignoring=NOT_LISTENING
                )
                for p in ("/metrics", "/healthz", "/readyz")
            ]
            proc.send_signal(signal.SIGTERM)
            code, _ = proc.exit_within(10)
            out, err = proc.out(), proc.err()
        assert code == 0, err[-2000:]
        assert "rpc_retry" in err and "range_scanned" in err  # the faults did happen
        found += leaks("run", out, err, *pages)

        # The one-off commands, beside each other: healthy, unreachable, failing.
        unreachable_db = make_url(secret_db_url).set(port=1).render_as_string(hide_password=False)
        closed = write_config(
            tmp_path / "closed.toml", secret_rpc("http://127.0.0.1:1"), [], level="debug"
        )
        failing = write_config(
            tmp_path / "failing.toml",
            secret_rpc(broken.url),
            [("USDT", h.token, 6)],
            level="debug",
        )
        head = str(h.chain.head())
        runs: dict[str, tuple[list[str], dict[str, str]]] = {
            "check-unreachable-rpc": (["check", "--config", str(closed)], env),
            "check-unreachable-database": (
                ["check", "--config", str(config)],
                scanner_env(unreachable_db),
            ),
            "status": (["status", "--config", str(config)], env),
            "backfill-rpc-failing": (
                [
                    *("backfill", "--config", str(failing), "--chain", "anvil"),
                    *("--from-block", "0", "--to-block", head),
                ],
                env,
            ),
            "run-unreachable-database": (
                ["run", "--config", str(config)],
                scanner_env(unreachable_db),
            ),
        }
        results: list[subprocess.CompletedProcess[str]] = await asyncio.gather(
            *(asyncio.to_thread(run_cli, args, e, timeout=30) for args, e in runs.values())
        )
    finally:
        tp.stop()
        broken.stop()
    codes = {name: r.returncode for name, r in zip(runs, results, strict=True)}
    assert codes == {
        "check-unreachable-rpc": 1,
        "check-unreachable-database": 1,
        "status": 0,
        "backfill-rpc-failing": 1,
        "run-unreachable-database": 1,
    }, {name: r.stderr[-800:] for name, r in zip(runs, results, strict=True)}
    printed = {name: r.stdout + r.stderr for name, r in zip(runs, results, strict=True)}
    # The errors still say what is wrong, and where (host and port, user and database).
    assert "problem: anvil: http://127.0.0.1:1/***" in printed["check-unreachable-rpc"]
    user_at = f"{make_url(secret_db_url).username}:***@127.0.0.1:1/"
    assert "problem: database postgresql://" + user_at in printed["check-unreachable-database"]
    assert "Connect" in printed["check-unreachable-database"]
    assert "HTTP 500" in printed["backfill-rpc-failing"]
    assert user_at in printed["run-unreachable-database"]
    for name, result in zip(runs, results, strict=True):
        found += leaks(name, result.stdout, result.stderr)
    assert not found, "\n".join(found)
