"""``scanner backfill``: the live pipeline over a fixed range, against a real node and both
databases. It decides every payment as the live scan did, credits nothing twice (rerun, or beside
the live scan), never moves the live cursor, resumes where it stopped, and its CLI reports."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.chain.reader import ChainReader
from scanner.config import ChainSettings
from scanner.config_types import RpcUrl
from scanner.db import persist
from scanner.errors import DatabaseError
from scanner.scan import backfill as backfill_module
from scanner.scan.backfill import Backfill, BackfillSummary
from scanner.scan.batch import run_range
from scanner.scan.parts import ChainParts
from scanner.testkit.gateway import db_id
from tests.conftest import BACKENDS
from tests.e2e.harness import Harness
from tests.ops.support import (
    RangeProxy,
    Scenario,
    build_scenario,
    chain_state_rows,
    count_rows,
    differences,
    ensure_tokens,
    insert_specs,
    json_lines,
    run_cli,
    scanner_env,
    scenario_in,
    snapshot,
    write_config,
)
from tests.support.wait import until

pytestmark = pytest.mark.long(50)  # seconds, about: the workers take it early

SMALL = {"batch_size": 4, "concurrency": 3}


def small(h: Harness, **more: Any) -> ChainSettings:
    return h.chain_settings.model_copy(update={**SMALL, **more})


async def backfill(
    chain: ChainSettings,
    sessions: async_sessionmaker[AsyncSession],
    start: int,
    end: int,
    **options: Any,
) -> BackfillSummary:
    reader = ChainReader.from_settings(chain, None)
    try:
        return await Backfill(ChainParts(chain, reader, sessions), **options).run(start, end)
    finally:
        await reader.client.aclose()


def statuses(snap: dict[str, Any], sc: Scenario) -> dict[str, str]:
    return {p.name: snap["payments"][p.id]["status"] for p in sc.payments}


def detected(snap: dict[str, Any], sc: Scenario) -> dict[str, int]:
    return {
        p.name: sum(1 for e in snap["events"].get(p.id, []) if e[0] == "transfer_detected")
        for p in sc.payments
    }


async def test_backfill_ends_in_the_same_rows_as_the_live_scan(
    h: Harness,
    other_engine: AsyncEngine,
    other_sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The backfill stores each range's events as the plan makes them, block by block (on
    PostgreSQL; as a range of thousands of transfers does): the same rows all the same."""
    live = h.make_scanner(**SMALL)
    h.scanner = live
    await live.prepare()

    async def created(payments: Any) -> None:
        await insert_specs(h.engine, payments)

    sc = await build_scenario(
        h.chain, h.token, h.token18, h.customer, on_payments=created, on_step=live.scan_until_head
    )
    await live.scan_until_head()
    head = h.chain.head()
    reference = await snapshot(h.sessions)
    assert statuses(reference, sc) == sc.expected
    assert detected(reference, sc) == sc.transfers
    late = [t for t in reference["transactions"] if t["to_address"] == sc.by_name("late").address]
    assert [t["late"] for t in late] == [True]
    assert ("paid_late", None, None) in [e[:3] for e in reference["events"][sc.by_name("late").id]]

    # The same range, backfilled into a fresh database, as history.
    monkeypatch.setattr(persist, "STREAMED_TRANSFERS", 1)
    chain = small(h)
    await ensure_tokens(other_sessions, chain)
    await insert_specs(other_engine, sc.payments)
    summary = await backfill(chain, other_sessions, 0, head)
    diff = differences(await snapshot(other_sessions), reference)
    assert not diff, "\n".join(diff)
    assert await chain_state_rows(other_engine) == []  # never a live cursor
    assert (summary.blocks, summary.matched) == (head + 1, sum(sc.transfers.values()))
    assert summary.payments_changed == len(sc.payments)

    # Twice: nothing is credited twice, no event is written again.
    again = await backfill(chain, other_sessions, 0, head)
    diff = differences(await snapshot(other_sessions), reference)
    assert not diff, "\n".join(diff)
    assert again.events == 0 and again.status_changes == {}

    # Over the range the live scan covered, on its database: no change, the cursor stays.
    cursor = await chain_state_rows(h.engine)
    blocks = (await count_rows(h.engine))["blocks"]
    await backfill(chain, h.sessions, 0, head)
    diff = differences(await snapshot(h.sessions), reference)
    assert not diff, "\n".join(diff)
    assert await chain_state_rows(h.engine) == cursor
    assert (await count_rows(h.engine))["blocks"] == blocks


@pytest.mark.parametrize("held", ["live", "backfill"])
async def test_backfill_beside_the_live_scan_credits_once(
    h: Harness,
    held: str,
    other_engine: AsyncEngine,
    other_sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Forced interleaving: one side is stopped at its third getLogs range (a proxy gate) while
    the other scans everything; then it goes on over rows the other already wrote."""
    sc = await scenario_in(h)
    head = h.chain.head()
    async with RangeProxy(h.chain.url) as proxy:
        via_proxy = {"rpc_urls": [RpcUrl(proxy.url)], "concurrency": 1}
        gate = proxy.hold_logs_from(8)
        task: asyncio.Task[object]  # a live scan's or a backfill's
        if held == "live":
            scanner = h.make_scanner(**{**SMALL, **via_proxy})
            h.scanner = scanner
            await scanner.prepare()
            task = asyncio.create_task(scanner.scan_until_head())
            async with asyncio.timeout(10):
                await gate.wait_reached()
            await backfill(small(h), h.sessions, 0, head)
        else:
            task = asyncio.create_task(backfill(small(h, **via_proxy), h.sessions, 0, head))
            async with asyncio.timeout(10):
                await gate.wait_reached()
            scanner = h.make_scanner(**SMALL)
            h.scanner = scanner
            await scanner.prepare()
            await scanner.scan_until_head()
        gate.release()
        async with asyncio.timeout(15):
            await task
    if held == "backfill":
        await scanner.scan_until_head()  # the live scan last, as it goes on after a backfill
    both = await snapshot(h.sessions)
    assert statuses(both, sc) == sc.expected
    assert detected(both, sc) == sc.transfers
    assert len(both["transactions"]) == sum(sc.transfers.values())

    # The same rows as one backfill alone.
    await ensure_tokens(other_sessions, h.chain_settings)
    await insert_specs(other_engine, sc.payments)
    await backfill(small(h), other_sessions, 0, head)
    diff = differences(await snapshot(other_sessions), both)
    assert not diff, "\n".join(diff)


async def test_interrupted_backfill_resumes_where_it_stopped(
    h: Harness, other_engine: AsyncEngine, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    sc = await scenario_in(h)
    head = h.chain.head()
    stop_at = 12
    async with RangeProxy(h.chain.url) as proxy:
        chain = small(h, rpc_urls=[RpcUrl(proxy.url)], concurrency=2)
        gate = proxy.hold_logs_from(stop_at)
        task = asyncio.create_task(backfill(chain, h.sessions, 0, head))
        async with asyncio.timeout(10):
            await gate.wait_reached()

        async def committed_before() -> bool:  # the ranges before the held one commit
            return await next_block(h.engine) == stop_at

        await until(committed_before, 10, f"next block {stop_at}")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await next_block(h.engine) == stop_at
        assert min(start for start, _ in proxy.log_ranges) == 0
        proxy.log_ranges.clear()
        gate.release()

        summary = await backfill(chain, h.sessions, 0, head)
        assert summary.resumed_from == stop_at
        assert min(start for start, _ in proxy.log_ranges) == stop_at  # nothing read again
        assert summary.blocks == head - stop_at + 1
    async with h.engine.connect() as conn:
        job = (await conn.execute(text("SELECT status, next_block FROM backfill_jobs"))).one()
    assert tuple(job) == ("done", head + 1)

    resumed = await snapshot(h.sessions)
    assert statuses(resumed, sc) == sc.expected
    await ensure_tokens(other_sessions, h.chain_settings)
    await insert_specs(other_engine, sc.payments)
    await backfill(small(h), other_sessions, 0, head)
    diff = differences(await snapshot(other_sessions), resumed)
    assert not diff, "\n".join(diff)


async def next_block(engine: AsyncEngine) -> int | None:
    async with engine.connect() as conn:
        value = (await conn.execute(text("SELECT next_block FROM backfill_jobs"))).scalar()
    return None if value is None else int(value)


# -- the command ---------------------------------------------------------------------------------


def cli_config(h: Harness, tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "scanner.toml",
        h.chain.url,
        [("USDT", h.token, 6), ("DAI", h.token18, 18)],
        batch_size=4,
    )


async def test_dry_run_writes_nothing_and_reports_what_would_change(
    h: Harness, db_url: str, tmp_path: Path
) -> None:
    sc = await scenario_in(h)
    head = h.chain.head()
    config = cli_config(h, tmp_path)
    env = scanner_env(db_url)
    args = ["backfill", "--config", str(config), "--chain", "anvil"]
    args += ["--from-block", "0", "--to-block", str(head)]
    before = await count_rows(h.engine)
    rows_before = await snapshot(h.sessions)

    dry = await asyncio.to_thread(run_cli, [*args, "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert await count_rows(h.engine) == before
    assert await snapshot(h.sessions) == rows_before
    report = json.loads(dry.stdout.strip().splitlines()[-1])
    assert report["dry_run"] is True
    assert {"blocks", "logs", "matches", "payments_changed", "seconds"} <= report.keys()
    assert report["blocks"] == head + 1
    assert report["matches"] == sum(sc.transfers.values())
    assert report["payments_changed"] == len(sc.payments)
    assert report["logs"] > 0  # logs read: the Transfers to the payments' addresses alone
    assert report["status_changes"]["confirmed"] == 5 and report["status_changes"]["expired"] == 2
    progress = [e for e in json_lines(dry.stderr) if e.get("event") == "backfill_progress"]
    assert progress and progress[-1]["block"] == head and progress[-1]["chain"] == "anvil"
    assert {"blocks_per_second", "eta_seconds", "done", "total"} <= progress[-1].keys()

    real = await asyncio.to_thread(run_cli, args, env)
    assert real.returncode == 0, real.stderr
    done = json.loads(real.stdout.strip().splitlines()[-1])
    assert done["dry_run"] is False
    assert {k: done[k] for k in ("blocks", "matches", "payments_changed", "status_changes")} == {
        k: report[k] for k in ("blocks", "matches", "payments_changed", "status_changes")
    }
    after = await snapshot(h.sessions)
    assert statuses(after, sc) == sc.expected
    assert await chain_state_rows(h.engine) == []


async def test_a_dry_run_holds_no_lock_the_live_scan_or_the_gateway_waits_for(
    h: Harness,
) -> None:
    """A dry run stopped on a read (a proxy gate) after it has applied every range before it:
    meanwhile the live scan credits the same payments and the gateway updates one of their
    rows, each at once; then the dry run ends with its report and has written nothing."""
    sc = await scenario_in(h)
    head = h.chain.head()
    hold_from = head - head % SMALL["batch_size"]  # the last range's first block
    async with RangeProxy(h.chain.url) as proxy:
        chain = small(h, rpc_urls=[RpcUrl(proxy.url)], concurrency=1)
        gate = proxy.hold_logs_from(hold_from)
        reader = ChainReader.from_settings(chain, None)
        applied: list[int] = []
        dry = Backfill(ChainParts(chain, reader, h.sessions), dry_run=True)
        task = asyncio.create_task(dry.run(0, head, lambda _, end: applied.append(end)))
        try:
            async with asyncio.timeout(10):
                await gate.wait_reached()
            await until(lambda: applied and applied[-1] >= hold_from - 1, 10, "ranges applied")
            async with asyncio.timeout(15):
                await h.scan()
                paid = sc.payments[0].id
                async with h.sessions() as session, session.begin():
                    await session.execute(
                        text("UPDATE payments SET updated_at = updated_at WHERE id = :id"),
                        {"id": db_id(h.engine, paid)},
                    )
            live = await snapshot(h.sessions)
            assert statuses(live, sc) == sc.expected
        finally:
            gate.release()
            async with asyncio.timeout(15):
                summary = await task
            await reader.client.aclose()
    assert await snapshot(h.sessions) == live
    assert summary.dry_run and summary.matched == sum(sc.transfers.values())
    assert summary.status_changes["confirmed"] == 5 and summary.status_changes["expired"] == 2


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_bad_ranges_and_unknown_chains_exit_2_with_a_clear_message(
    h: Harness, db_url: str, tmp_path: Path
) -> None:
    head = h.chain.head()
    config = cli_config(h, tmp_path)
    env = scanner_env(db_url)

    def run(chain: str, start: int, end: int) -> Any:
        args = ["backfill", "--config", str(config), "--chain", chain]
        return run_cli([*args, "--from-block", str(start), "--to-block", str(end)], env)

    cases = {
        "past the head": (("anvil", 0, head + 1000), [str(head + 1000), "head", str(head)]),
        "reversed": (("anvil", 5, 2), ["--from-block 5", "--to-block 2"]),
        "unknown chain": (("nope", 0, 1), ["unknown chain", "nope", "anvil"]),
    }
    results = await asyncio.gather(*(asyncio.to_thread(run, *call) for call, _ in cases.values()))
    for (name, (_, words)), result in zip(cases.items(), results, strict=True):
        assert result.returncode == 2, (name, result.stderr)
        message = [line for line in result.stderr.splitlines() if line.startswith("scanner:")]
        assert message, (name, result.stderr)
        assert all(w in message[-1] for w in words), (name, message)
        assert "Traceback" not in result.stderr
    assert await count_rows(h.engine) == {**await count_rows(h.engine), "backfill_jobs": 0}


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
@pytest.mark.skipif("postgresql" not in BACKENDS, reason="the chain's lock is PostgreSQL's")
async def test_a_backfill_frozen_inside_a_commit_holds_the_chain_no_longer_than_its_limit(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill that stops answering inside its first commit (a process frozen by ctrl-Z), the
    chain's lock held: the server ends its transaction after the idle limit, the live scan then
    scans at once; woken, the backfill's commit fails and writes nothing, and run again it ends
    in the rows the live scan wrote, every transfer credited once."""
    sc = await scenario_in(h)
    head = h.chain.head()
    frozen = asyncio.Event()
    real = run_range

    async def freeze_once(*args: Any, **kwargs: Any) -> Any:
        if not frozen.is_set():
            frozen.set()
            await asyncio.sleep(8)  # nothing sent: idle in its transaction, the lock held
        return await real(*args, **kwargs)

    monkeypatch.setattr(backfill_module, "run_range", freeze_once)
    chain = small(h)
    reader = ChainReader.from_settings(chain, None)
    job = Backfill(ChainParts(chain, reader, h.sessions, idle_seconds=1.0))
    task = asyncio.create_task(job.run(0, head))
    try:
        async with asyncio.timeout(10):
            await frozen.wait()
        started = time.monotonic()
        async with asyncio.timeout(10):
            await h.scan()  # waits for the chain's lock, which the server frees after 1 s
        assert time.monotonic() - started < 6  # well before the backfill woke
        with pytest.raises(DatabaseError, match="connection"):
            await task
    finally:
        task.cancel()
        await reader.client.aclose()
    live = await snapshot(h.sessions)
    assert statuses(live, sc) == sc.expected
    monkeypatch.setattr(backfill_module, "run_range", real)
    await backfill(chain, h.sessions, 0, head)
    again = await snapshot(h.sessions)
    assert statuses(again, sc) == sc.expected and detected(again, sc) == sc.transfers
    assert len(again["transactions"]) == sum(sc.transfers.values())
