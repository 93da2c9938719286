"""``scanner run`` as the real process an operator runs: signals, sd_notify, the observe server
(/metrics, /healthz, /readyz), and the exit codes of start-up (schema, configuration); and
``scanner migrate``. Every process is bounded and killed on the way out."""

from __future__ import annotations

import asyncio
import resource
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.db import migrate
from scanner.devchain.node import free_port
from tests.e2e.harness import Harness
from tests.ops.support import (
    NOT_LISTENING,
    NotifyListener,
    RangeProxy,
    chain_state_rows,
    differences,
    ensure_tokens,
    http_get,
    insert_specs,
    json_lines,
    run_cli,
    scanner_env,
    scanner_process,
    scenario_in,
    snapshot,
    write_config,
)
from tests.support.proxy import ThreadedProxy
from tests.support.wait import until_sync

pytestmark = [pytest.mark.slow, pytest.mark.long(50)]
SQLITE_ONLY = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)


def tokens_of(h: Harness) -> list[tuple[str, str, int]]:
    return [("USDT", h.token, 6), ("DAI", h.token18, 18)]


# -- SIGTERM mid-batch -----------------------------------------------------------------------------


@asynccontextmanager
async def held_scan(
    h: Harness, tmp_path: Path, db_url: str, *, shutdown_timeout: float = 10.0
) -> AsyncIterator[tuple[Any, Any, Any]]:
    """A chain with the payment scenario; ``scanner run`` through a proxy that holds the read of
    the range starting at block 12 (batches of 4, one range in flight), entered once that read
    is held: the scenario, the process and the gate."""
    sc = await scenario_in(h)
    tp = ThreadedProxy(h.chain.url)
    tp.proxy = RangeProxy(h.chain.url)
    tp.start()
    gate = tp.proxy.hold_logs_from(12)
    config = write_config(
        tmp_path / "scanner.toml",
        tp.url,
        tokens_of(h),
        batch_size=4,
        extra_chain="concurrency = 1",
        extra_top=f"shutdown_timeout = {shutdown_timeout}",
    )
    try:
        with scanner_process(["run", "--config", str(config)], scanner_env(db_url)) as proc:
            assert await asyncio.to_thread(gate.wait_reached_sync, 15), "the range was not read"
            yield sc, proc, gate
    finally:
        tp.stop()


async def assert_consistent(
    h: Harness,
    other_engine: AsyncEngine,
    other_sessions: async_sessionmaker[AsyncSession],
    sc: Any,
    cursor: int,
) -> None:
    """Rows and cursor agree: nothing credited above the cursor, no block stored above it, and
    the rows are exactly those of a clean backfill of 0..cursor (no half-written range)."""
    from tests.ops.test_backfill import backfill, small

    async with h.engine.connect() as conn:
        top_tx = (
            await conn.execute(text("SELECT max(block_number) FROM transactions"))
        ).scalar_one()
        top_block = (await conn.execute(text("SELECT max(number) FROM blocks"))).scalar_one()
    assert top_tx is None or int(top_tx) <= cursor
    assert int(top_block) == cursor
    await ensure_tokens(other_sessions, h.chain_settings)
    await insert_specs(other_engine, sc.payments)
    await backfill(small(h), other_sessions, 0, cursor)
    diff = differences(await snapshot(h.sessions), await snapshot(other_sessions))
    assert not diff, "\n".join(diff)


async def test_sigterm_mid_batch_commits_the_batch_in_flight_and_exits_0(
    h: Harness,
    db_url: str,
    tmp_path: Path,
    other_engine: AsyncEngine,
    other_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with held_scan(h, tmp_path, db_url) as (sc, proc, gate):
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)  # it must wait for the batch in flight, not drop it
        assert proc.poll() is None
        gate.release()
        code, _ = proc.exit_within(10)
        err = proc.err()
    assert code == 0, err[-3000:]
    events = [e.get("event") for e in json_lines(err)]
    assert "signal_received" in events and "scanner_stopped" in events
    ((_, cursor, _, _),) = await chain_state_rows(h.engine)
    assert cursor == 15  # the held range 12..15 committed, and no range after it was started
    await assert_consistent(h, other_engine, other_sessions, sc, cursor)


@SQLITE_ONLY
async def test_a_batch_that_does_not_finish_in_the_bound_is_dropped_cleanly(
    h: Harness,
    db_url: str,
    tmp_path: Path,
    other_engine: AsyncEngine,
    other_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with held_scan(h, tmp_path, db_url, shutdown_timeout=1.0) as (sc, proc, _):
        proc.send_signal(signal.SIGTERM)  # and the gate is never released
        code, took = proc.exit_within(8)
        err = proc.err()
    assert code == 0, err[-3000:]
    assert took < 4, took
    assert "shutdown_timeout_cancelling" in [e.get("event") for e in json_lines(err)]
    ((_, cursor, _, _),) = await chain_state_rows(h.engine)
    assert cursor == 11
    await assert_consistent(h, other_engine, other_sessions, sc, cursor)


@SQLITE_ONLY
async def test_a_second_signal_exits_at_once_losing_nothing_committed(
    h: Harness,
    db_url: str,
    tmp_path: Path,
    other_engine: AsyncEngine,
    other_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with held_scan(h, tmp_path, db_url) as (sc, proc, _):
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        code, took = proc.exit_within(3)
        err = proc.err()
    assert code == 130 and took < 2, (code, took, err[-2000:])
    assert "second_signal_exiting_now" in [e.get("event") for e in json_lines(err)]
    ((_, cursor, _, _),) = await chain_state_rows(h.engine)
    assert cursor == 11
    await assert_consistent(h, other_engine, other_sessions, sc, cursor)


# -- a running scanner: sd_notify, metrics, health -----------------------------------------------

METRICS = {
    "scanner_chain_head_block": "gauge",
    "scanner_last_scanned_block": "gauge",
    "scanner_lag_blocks": "gauge",
    "scanner_rpc_requests": "counter",
    "scanner_rpc_request_duration_seconds": "histogram",
    "scanner_logs_processed": "counter",
    "scanner_transfers_matched": "counter",
    "scanner_payment_status_changes": "counter",
    "scanner_reorgs": "counter",
    "scanner_reorg_depth": "histogram",
    "scanner_skipped_logs": "counter",
    "scanner_batch_duration_seconds": "histogram",
    "scanner_open_payments": "gauge",
    "scanner_chain_halted": "gauge",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge",
}


def samples(body: str) -> tuple[dict[str, str], dict[tuple[str, frozenset[Any]], float]]:
    kinds: dict[str, str] = {}
    values: dict[tuple[str, frozenset[Any]], float] = {}
    for family in text_string_to_metric_families(body):
        kinds[family.name] = family.type
        for s in family.samples:
            values[(s.name, frozenset(s.labels.items()))] = s.value
    return kinds, values


def value(values: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    return values.get((name, frozenset(labels.items())), float("nan"))


@SQLITE_ONLY
async def test_a_running_scanner_notifies_systemd_serves_metrics_and_health(
    h: Harness, db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    config = write_config(tmp_path / "scanner.toml", h.chain.url, tokens_of(h), metrics_port=port)
    base = f"http://127.0.0.1:{port}"
    listener = NotifyListener()
    env = scanner_env(db_url, NOTIFY_SOCKET=listener.path, WATCHDOG_USEC="600000")
    try:
        with scanner_process(["run", "--config", str(config)], env) as proc:
            listener.wait_for(lambda m: "READY=1" in m.splitlines())
            assert (await asyncio.to_thread(http_get, base + "/healthz"))[0] == 200
            until_sync(
                lambda: http_get(base + "/readyz")[0] == 200,
                10,
                what="/readyz 200",
                ignoring=NOT_LISTENING,
            )

            # A payment: a poisoning zero-value transfer, then the real one, then 3 blocks.
            address = "0x" + "5e" * 20
            pid = str(uuid.uuid4())
            await insert_payment(h, pid, address, "12.5")
            h.chain.wait_receipt(h.chain.transfer(h.token, h.customer, address, 0))
            h.chain.wait_receipt(h.chain.transfer(h.token, h.customer, address, 12_500_000))
            h.chain.mine(3)
            await h.until_status(pid, "confirmed", 10, 0.1)
            head = h.chain.head()

            def settled() -> Any:
                kinds, values = samples(http_get(base + "/metrics")[1])
                done = value(values, "scanner_last_scanned_block", chain="anvil") == head
                idle = value(values, "scanner_open_payments", chain="anvil") == 0
                return (kinds, values) if done and idle else None

            kinds, values = await asyncio.to_thread(
                until_sync, settled, 10.0, "metrics", 0.1, ignoring=NOT_LISTENING
            )
            watchdog = listener.wait_for(lambda m: m == "WATCHDOG=1")
            status = listener.wait_for(lambda m: m.startswith("STATUS="))
            health = await asyncio.to_thread(http_get, base + "/healthz")
            ready = await asyncio.to_thread(http_get, base + "/readyz")
            proc.send_signal(signal.SIGTERM)
            listener.wait_for(lambda m: "STOPPING=1" in m.splitlines())
            code, _ = proc.exit_within(10)
            err = proc.err()
    finally:
        listener.close()
    assert code == 0, err[-3000:]
    assert watchdog == "WATCHDOG=1" and "anvil: lag" in status
    assert health[0] == 200 and '"healthy":true' in health[1].replace(" ", "")
    assert ready[0] == 200 and '"ready":true' in ready[1].replace(" ", "")
    ready_at = listener.messages.index(next(m for m in listener.messages if "READY=1" in m))
    assert ready_at < listener.messages.index(status)

    missing = {name: kind for name, kind in METRICS.items() if kinds.get(name) != kind}
    assert not missing, missing
    assert value(values, "scanner_chain_head_block", chain="anvil") == head
    assert value(values, "scanner_lag_blocks", chain="anvil") == 0
    ok_reads = [
        v
        for (name, labels), v in values.items()
        if name == "scanner_rpc_requests_total"
        and {("chain", "anvil"), ("outcome", "ok")} <= labels
        and any(k == "method" for k, _ in labels)
    ]
    assert ok_reads and min(ok_reads) >= 1
    assert (
        value(
            values,
            "scanner_rpc_request_duration_seconds_count",
            chain="anvil",
            method="eth_getBlockByNumber",  # the head block, "latest": number and timestamp
        )
        >= 1
    )
    assert value(values, "scanner_logs_processed_total", chain="anvil") >= 2
    assert value(values, "scanner_transfers_matched_total", chain="anvil") == 1
    changes = "scanner_payment_status_changes_total"
    assert value(values, changes, chain="anvil", status="confirming") == 1
    assert value(values, changes, chain="anvil", status="confirmed") == 1
    assert value(values, "scanner_skipped_logs_total", chain="anvil", reason="zero_value") == 1
    assert value(values, "scanner_reorgs_total", chain="anvil") == 0
    assert value(values, "scanner_reorg_depth_count", chain="anvil") == 0
    assert value(values, "scanner_batch_duration_seconds_count", chain="anvil") >= 1
    assert value(values, "scanner_chain_halted", chain="anvil") == 0
    assert value(values, "process_resident_memory_bytes") > 0


@SQLITE_ONLY
async def test_a_halted_chain_is_not_ready_but_alive(
    h: Harness, db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "scanner.toml", h.chain.url, tokens_of(h), metrics_port=port, chain_id=1
    )
    base = f"http://127.0.0.1:{port}"
    with scanner_process(["run", "--config", str(config)], scanner_env(db_url)) as proc:

        def halted() -> Any:
            status, body = http_get(base + "/readyz")
            return (status, body) if "halted" in body else None

        ready = await asyncio.to_thread(
            until_sync, halted, 10.0, "a halted /readyz", 0.1, ignoring=NOT_LISTENING
        )
        health = await asyncio.to_thread(http_get, base + "/healthz")
        _, values = samples((await asyncio.to_thread(http_get, base + "/metrics"))[1])
        proc.send_signal(signal.SIGTERM)
        code, _ = proc.exit_within(10)
        err = proc.err()
    assert ready[0] == 503 and "31337" in ready[1], ready
    assert health[0] == 200, health
    assert value(values, "scanner_chain_halted", chain="anvil") == 1
    assert code == 0, err[-2000:]
    assert "chain_halted" in [e.get("event") for e in json_lines(err)]


async def insert_payment(h: Harness, pid: str, address: str, amount: str) -> None:
    from tests.ops.support import PaymentSpec

    await ensure_tokens(h.sessions, h.chain_settings)
    now = h.now()
    spec = PaymentSpec("p", pid, address, amount, h.token, now, now + 3600)
    await insert_specs(h.engine, [spec])


# -- start-up exit codes and migrations -----------------------------------------------------------


async def test_an_unknown_schema_revision_exits_3_naming_it(
    h: Harness, db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    async with engine.begin() as conn:  # as a newer scanner's migration would leave it
        await conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeedbeef'"))
    config = write_config(tmp_path / "scanner.toml", h.chain.url, tokens_of(h))
    result = await asyncio.to_thread(run_cli, ["run", "--config", str(config)], scanner_env(db_url))
    assert result.returncode == 3, result.stderr
    assert "f00dfeedbeef" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_an_unknown_config_key_exits_2_naming_the_key_and_the_file(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bad.toml",
        "http://127.0.0.1:1",
        [],
        extra_chain="confirmatoins_typo = 5",
    )
    result = run_cli(["run", "--config", str(config)], scanner_env(f"sqlite:///{tmp_path}/x.db"))
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "confirmatoins_typo" in message and str(config) in message, message
    assert "unknown key" in message
    assert not (tmp_path / "x.db").exists()  # it stopped before touching a database


async def test_migrate_upgrade_then_current_shows_head(empty_db_url: str) -> None:
    env = scanner_env(empty_db_url)
    head = migrate.head_revision()
    upgraded = await asyncio.to_thread(run_cli, ["migrate", "upgrade"], env)
    assert upgraded.returncode == 0, upgraded.stderr
    current = await asyncio.to_thread(run_cli, ["migrate", "current"], env)
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == f"{head} (head)"


# -- the metrics port under a flood of idle connections ------------------------------------------

FD_LIMIT = 200  # the scanner's descriptors in this test (systemd's default is 1,024)


@contextmanager
def descriptor_limit(limit: int) -> Iterator[None]:
    """Processes started inside inherit a soft RLIMIT_NOFILE of ``limit``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@SQLITE_ONLY
async def test_idle_connections_to_the_metrics_port_use_up_no_descriptors(
    h: Harness, db_url: str, tmp_path: Path
) -> None:
    """More connections that send nothing than the process has descriptors: they are capped
    (``max_connections``, lowered here to keep the test small), so /healthz and /readyz answer
    and the chain goes on scanning, instead of every accept and socket failing."""
    port = free_port()
    config = write_config(tmp_path / "scanner.toml", h.chain.url, tokens_of(h), metrics_port=port)
    text_ = config.read_text().replace("[metrics]\n", "[metrics]\nmax_connections = 16\n")
    config.write_text(text_)
    base = f"http://127.0.0.1:{port}"
    with descriptor_limit(FD_LIMIT):
        started = scanner_process(["run", "--config", str(config)], scanner_env(db_url))
        proc = started.__enter__()
    flood: list[socket.socket] = []
    try:
        until_sync(
            lambda: http_get(base + "/readyz")[0] == 200,
            30,
            what="/readyz 200",
            ignoring=NOT_LISTENING,
        )
        for _ in range(FD_LIMIT + 50):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        h.chain.mine(3)
        head = h.chain.head()
        for page in ("/healthz", "/readyz"):
            status, body = await asyncio.to_thread(http_get, base + page, 3.0)
            assert status == 200, (page, body)
        scanned = lambda: [  # noqa: E731
            e
            for e in json_lines(proc.err())
            if e.get("event") == "range_scanned" and e.get("to_block") == head
        ]
        until_sync(scanned, 20, what=f"block {head} scanned after the flood")
        assert "Too many open files" not in proc.err()
    finally:
        for sock in flood:
            sock.close()
        started.__exit__(None, None, None)
