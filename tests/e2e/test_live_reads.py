"""The live scan far behind the head (after downtime) reads no header per block: ranges older
than the reorg window read their logs and the headers of only the blocks whose times the rules
read, and are not hash-linked; the window itself is read and linked block by block. Against a
real node and both databases, it writes the same rows and events as a scan that reads every
header (``max_reorg_depth`` above the head), into a second database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.chain.reader import ChainReader
from scanner.config_types import RpcUrl
from scanner.db.engine import make_session_factory
from scanner.observe.metrics import Metrics
from scanner.scan.live import ChainScanner
from scanner.scan.parts import ChainParts
from tests.e2e.harness import Harness
from tests.ops.support import ensure_tokens, insert_specs, snapshot
from tests.ops.test_backfill_reads import ReadsProxy, assert_same, statuses, token_scenario

WINDOW = 3  # max_reorg_depth: the least the scenario's 3 confirmations allow
SCAN = {"batch_size": 20, "concurrency": 3, "start_block": 0}


@pytest.fixture
def other_sessions(other_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_session_factory(other_engine)


async def scan_via(
    h: Harness, sessions: async_sessionmaker[AsyncSession], proxy: ReadsProxy, **chain: Any
) -> int:
    """A live scan from block 0 to the head through ``proxy``; the cursor it ends at."""
    settings = h.chain_settings.model_copy(
        update={**SCAN, **chain, "rpc_urls": [RpcUrl(proxy.url)]}
    )
    scanner = ChainScanner(
        ChainParts(settings, ChainReader.from_settings(settings, None), sessions, metrics=Metrics())
    )
    try:
        await scanner.prepare()
        await scanner.scan_until_head()
        return scanner.cursor
    finally:
        await scanner.reader.client.aclose()


async def test_a_scan_far_behind_reads_few_headers_and_writes_what_a_dense_scan_writes(
    h: Harness, other_engine: AsyncEngine, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    sc, payments = await token_scenario(h)
    h.chain.mine(100)
    head = h.chain.head()
    async with ReadsProxy(h.chain.url) as proxy:
        assert await scan_via(h, h.sessions, proxy, max_reorg_depth=WINDOW) == head
    assert len(proxy.blocks_read) < (head + 1) // 2, sorted(proxy.blocks_read)
    assert proxy.blocks_read >= set(range(head - WINDOW, head + 1))  # the window: every header

    await ensure_tokens(other_sessions, h.chain_settings)
    await insert_specs(other_engine, payments)
    async with ReadsProxy(h.chain.url) as dense:
        assert await scan_via(h, other_sessions, dense, max_reorg_depth=100_000) == head
    assert dense.blocks_read >= set(range(head + 1))

    got = await snapshot(h.sessions)
    assert_same(got, await snapshot(other_sessions))
    # 100 blocks on, what the scenario left confirming is confirmed
    want = {p.name: sc.expected[p.name].replace("confirming", "confirmed") for p in payments}
    assert statuses(got, payments) == want


async def test_after_a_deep_catch_up_a_reorg_inside_the_window_is_still_followed(
    h: Harness,
) -> None:
    _, payments = await token_scenario(h)
    h.chain.mine(40)
    async with ReadsProxy(h.chain.url) as proxy:
        await scan_via(h, h.sessions, proxy, max_reorg_depth=WINDOW)
    before = await snapshot(h.sessions)
    h.chain.reorg(2)  # the node replaces the last two (empty) blocks the scan stored ...
    h.chain.mine(40)  # ... and moves on: the next scan's first range is far below the head
    async with ReadsProxy(h.chain.url) as proxy:
        assert await scan_via(h, h.sessions, proxy, max_reorg_depth=WINDOW) == h.chain.head()
    after = await snapshot(h.sessions)
    assert statuses(after, payments) == statuses(before, payments)
    async with h.engine.connect() as conn:
        depth = await conn.scalar(text("SELECT last_reorg_depth FROM chain_states"))
    assert depth == 2
