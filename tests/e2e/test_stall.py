"""A node that stalls: it answers, and its head stops moving. Two fault proxies in front of one
anvil act as two RPC URLs; one (or both) freezes its head while anvil goes on.

The head is judged by its block timestamp against the wall clock: the tests move the chain's
clock forward (``increase_time``) instead of sleeping, and give the watch a clock of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from scanner.app import App
from scanner.chain.reader import ChainReader
from scanner.chain.retrying import Backoff
from scanner.chain.rpc import RpcClient
from scanner.chain.stall import HeadWatch, derived_stall_after
from scanner.scan.live import ChainScanner
from scanner.scan.parts import ChainParts
from scanner.testkit.settings import CHAIN, chain_settings
from tests.e2e.actions import pay
from tests.e2e.harness import Harness, stored_cursor
from tests.support.proxy import FaultProxy
from tests.support.wait import until

ALICE, BOB = "0x" + "a1" * 20, "0x" + "b2" * 20
FAST = Backoff(initial=0.01, maximum=0.05, max_retry_after=0.05)


@pytest.fixture
async def proxies(h: Harness) -> AsyncIterator[tuple[FaultProxy, FaultProxy]]:
    async with FaultProxy(h.chain.url) as one, FaultProxy(h.chain.url) as two:
        yield one, two


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def watched_scanner(
    h: Harness, urls: list[str], clock: Clock, stall_after: float | None = 5.0
) -> tuple[ChainScanner, HeadWatch]:
    chain = chain_settings(urls[0], [("USDT", h.token, 6)], rpc_urls=urls)
    client = RpcClient(CHAIN, urls, max_attempts=2, observer=h.metrics, backoff=FAST)
    reader = ChainReader(client)
    scanner = ChainScanner(ChainParts(chain, reader, h.sessions, metrics=h.metrics))
    watch = HeadWatch(reader, stall_after, observer=h.metrics, clock=clock)
    scanner.read_head = watch.read
    h.scanner = scanner
    return scanner, watch


def metric(h: Harness, name: str) -> float:
    return float(h.metrics.registry.get_sample_value(name, {"chain": CHAIN}) or 0.0)


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_a_stalled_node_fails_over_to_the_healthy_one_and_nothing_is_skipped(
    h: Harness, proxies: tuple[FaultProxy, FaultProxy]
) -> None:
    stuck, healthy = proxies
    clock = Clock(h.now())
    scanner, watch = watched_scanner(h, [stuck.url + "/v3/KEY1", healthy.url + "/v3/KEY2"], clock)
    await scanner.prepare()
    pid = await h.create_payment(ALICE, "2")
    await scanner.scan_until_head()
    frozen = await stuck.freeze()  # says it is synced; its head stays here
    h.chain.increase_time(60)
    pay(h, ALICE, 2_000_000)
    h.mine(3)
    clock.now = h.now()  # the frozen head is 60 s old; stall_after is 5 s

    with capture_logs() as logs:
        outcome = await scanner.scan_until_head()
    (stalled,) = events(logs, "node_stalled")
    assert stalled["head"] == frozen and stalled["url"].startswith(stuck.url)
    assert "KEY1" not in str(logs)
    assert scanner.reader.client.active_url.startswith(healthy.url)
    assert outcome.head == h.chain.head() and await stored_cursor(h) == h.chain.head()
    assert await h.status(pid) == "confirmed"
    assert watch.stalled is None  # one URL is fine: the chain is not stalled
    assert metric(h, "scanner_node_stalls_total") == 1
    assert metric(h, "scanner_chain_stalled") == 0

    with capture_logs() as logs:  # the next ticks stay on the healthy URL, no new stall logged
        h.mine(1)
        clock.now = h.now()
        await scanner.scan_until_head()
    assert events(logs, "node_stalled") == []
    assert metric(h, "scanner_node_stalls_total") == 1


async def test_when_every_node_is_stalled_the_chain_waits_and_says_so(
    h: Harness, proxies: tuple[FaultProxy, FaultProxy]
) -> None:
    one, two = proxies
    clock = Clock(h.now())
    scanner, watch = watched_scanner(h, [one.url, two.url], clock)
    await scanner.prepare()
    pid = await h.create_payment(BOB, "1")
    await scanner.scan_until_head()
    frozen = await one.freeze()
    assert await two.freeze() == frozen
    h.chain.increase_time(60)
    pay(h, BOB, 1_000_000)  # mined above the frozen heads: not shown by either node
    h.mine(3)
    clock.now = h.now()

    with capture_logs() as logs:
        outcome = await scanner.tick()
    assert outcome.head == frozen and outcome.caught_up
    assert await stored_cursor(h) == frozen  # waits at what the nodes show, skips nothing
    assert len(events(logs, "node_stalled")) == 2
    assert len(events(logs, "nodes_stalled")) == 1
    assert watch.stalled is not None and "every RPC URL is stalled" in watch.stalled
    assert metric(h, "scanner_chain_stalled") == 1
    assert (await h.payment(pid))["amount_received"] == 0

    two.thaw()  # one node moves again: the chain goes on from where it waited
    await scanner.scan_until_head()
    assert watch.stalled is None and metric(h, "scanner_chain_stalled") == 0
    assert await stored_cursor(h) == h.chain.head()
    assert (await h.payment(pid))["amount_received"] == Decimal("1")


async def test_stall_after_defaults_to_thirty_block_times_at_least_a_minute(h: Harness) -> None:
    assert derived_stall_after(12.0) == 360.0 and derived_stall_after(0.25) == 60.0
    h.chain.mine(70, interval=12)  # an Ethereum-like chain: a block every 12 s
    clock = Clock(h.now() + 300)  # the head is five minutes old: still moving at 12 s blocks
    _, watch = watched_scanner(h, [h.chain.url], clock, stall_after=None)
    assert await watch.read() == h.chain.head()
    assert watch.stall_after == pytest.approx(360.0, abs=1) and watch.stalled is None
    clock.now += 100  # 400 s old: stalled (one URL: it waits and says so)
    await watch.read()
    assert watch.stalled is not None
    assert metric(h, "scanner_node_stalls_total") == 1


async def test_a_stalled_chain_is_not_ready_in_the_running_app(
    h: Harness, proxies: tuple[FaultProxy, FaultProxy]
) -> None:
    one, two = proxies
    h.mine(1)
    chain = chain_settings(
        one.url,
        [("USDT", h.token, 6)],
        rpc_urls=[one.url, two.url],
        stall_after=1.0,
        poll_interval=0.05,
    )
    settings = h.settings.model_copy(
        update={
            "chains": [chain],
            "metrics": h.settings.metrics.model_copy(update={"enabled": False}),
        }
    )
    app = App(settings, environ={})
    task = asyncio.create_task(app.run())
    try:
        await until(lambda: app.health.healthy()[1]["chains"].get(CHAIN, {}).get("ticks", 0) > 0)
        await one.freeze()
        await two.freeze()
        await until(lambda: app.health.healthy()[1]["chains"][CHAIN]["stalled"] is not None)
        ready, body = await app.health.ready(lambda: _ok())
        assert not ready
        assert any("stalled" in reason for reason in body["reasons"]), body
        assert app.health.healthy()[0]  # alive: a restart would not move the nodes
        one.thaw()
        h.mine(1)
        await until(lambda: app.health.healthy()[1]["chains"][CHAIN]["stalled"] is None)
    finally:
        app.stop.set()
        assert await asyncio.wait_for(task, 10) == 0


async def _ok() -> str | None:
    return None
