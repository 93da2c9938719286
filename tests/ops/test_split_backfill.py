"""``scanner backfill --job-size``: several processes share one large backfill. The range is cut
into ``backfill_jobs`` rows claimed with ``FOR UPDATE SKIP LOCKED``, each committed with its
progress, in block order across jobs; a worker killed mid-job (``kill -9``) has its job taken
over, from where it stood, once its lease expires; the rows and events equal one clean
backfill's (the scenario has a late transfer whose payment expires in a later job: committed out
of order, the events would differ). Real processes, a real anvil, a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.chain.reader import ChainReader
from scanner.scan.backfill import Backfill
from scanner.scan.parts import ChainParts
from tests.conftest import BACKENDS
from tests.e2e.harness import Harness
from tests.ops.support import (
    RangeProxy,
    differences,
    ensure_tokens,
    insert_specs,
    json_lines,
    scanner_env,
    scanner_process,
    scenario_in,
    snapshot,
    write_config,
)
from tests.support.wait import until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True),
    pytest.mark.skipif("postgresql" not in BACKENDS, reason="several workers need PostgreSQL"),
]
JOB = 4


async def jobs(engine: AsyncEngine) -> list[tuple[int, int, int, str, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT from_block, to_block, next_block, status, lease_instance"
                " FROM backfill_jobs ORDER BY from_block"
            )
        )
        return [tuple(r) for r in rows]


def claims(err: str) -> list[dict[str, Any]]:
    return [e for e in json_lines(err) if e.get("event") == "backfill_job_claimed"]


async def test_workers_share_the_jobs_and_take_over_a_killed_workers_job(
    h: Harness,
    db_url: str,
    tmp_path: Path,
    other_engine: AsyncEngine,
    other_sessions: async_sessionmaker[AsyncSession],
) -> None:
    sc = await scenario_in(h)
    head = h.chain.head()
    tokens = [("USDT", h.token, 6), ("DAI", h.token18, 18)]
    cluster = "[cluster]\nlease_seconds = 2.0"
    direct = write_config(
        tmp_path / "direct.toml", h.chain.url, tokens, batch_size=2, extra_top=cluster
    )
    env = scanner_env(db_url)
    args = ["backfill", "--chain", "anvil", "--from-block", "0", "--to-block", str(head)]
    args += ["--job-size", str(JOB)]
    killed = f":{await _a_worker_killed_mid_job(h, tmp_path, args, env, cluster)}:"
    with (
        scanner_process([*args, "--config", str(direct)], env) as one,
        scanner_process([*args, "--config", str(direct)], env) as two,
    ):
        for worker in (one, two):
            code, _ = await asyncio.to_thread(worker.exit_within, 60)
            assert code == 0, worker.err()[-3000:]
        logs = [claims(one.err()), claims(two.err())]
        summaries = [json.loads(w.out().strip().splitlines()[-1]) for w in (one, two)]
    rows = await jobs(h.engine)
    pieces = [(a, min(a + JOB - 1, head)) for a in range(0, head + 1, JOB)]
    assert [(a, b) for a, b, *_ in rows] == pieces
    assert all(status == "done" and holder is None for *_, status, holder in rows)
    taken = [c for c in logs[0] + logs[1] if c["taken_over_from"]]
    assert len(taken) == 1 and killed in taken[0]["taken_over_from"]
    assert (taken[0]["from_block"], taken[0]["next_block"]) == (0, 2)  # from where it stood
    claimed = {c["from_block"] for c in logs[0] + logs[1]}
    assert claimed == {a for a, _ in pieces}  # the killed one's again, and every other
    assert sum(s["blocks"] for s in summaries) == head + 1 - 2

    reference = await _one_clean_backfill(h, other_engine, other_sessions, sc, head)
    diff = differences(await snapshot(h.sessions), reference)
    assert not diff, "\n".join(diff)


async def _a_worker_killed_mid_job(
    h: Harness, tmp_path: Path, args: list[str], env: dict[str, str], cluster: str
) -> int:
    """A worker whose first job stands at block 2 (its second range never answers: a proxy
    gate), killed with SIGKILL; its pid."""
    tokens = [("USDT", h.token, 6), ("DAI", h.token18, 18)]
    async with RangeProxy(h.chain.url) as proxy:
        slow = write_config(
            tmp_path / "slow.toml", proxy.url, tokens, batch_size=2, extra_top=cluster
        )
        gate = proxy.hold_logs_from(2)
        with scanner_process([*args, "--config", str(slow)], env) as doomed:
            async with asyncio.timeout(20):  # the first worker, in its first job
                await gate.wait_reached()

            async def stands_at_2() -> bool:
                return (await jobs(h.engine))[0][2] == 2

            await until(stands_at_2, 10, "its first range committed")
            doomed.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(doomed.exit_within, 10)
        gate.release()
    return doomed.proc.pid


async def _one_clean_backfill(
    h: Harness,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    sc: Any,
    head: int,
) -> dict[str, Any]:
    await ensure_tokens(sessions, h.chain_settings)
    await insert_specs(engine, sc.payments)
    reader = ChainReader.from_settings(h.chain_settings, None)
    try:
        await Backfill(ChainParts(h.chain_settings, reader, sessions)).run(0, head)
    finally:
        await reader.client.aclose()
    return await snapshot(sessions)
