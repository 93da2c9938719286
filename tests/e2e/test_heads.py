"""newHeads over a real websocket (anvil serves one on its HTTP port), through a proxy the tests
can cut, refuse or freeze: a head wakes the tick at once, polling carries on when the
subscription drops or goes quiet, and reorgs are still found by hash.

The in-process App runs the chain as ``scanner run`` does; a long ``poll_interval`` makes any
prompt detection the subscription's doing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from scanner.app import App
from scanner.config import ChainSettings
from scanner.secrets import Scrubber
from scanner.testkit.settings import CHAIN, chain_settings, settings_from
from tests.e2e.actions import pay
from tests.e2e.harness import Harness
from tests.support.wait import until
from tests.support.wsproxy import WsProxy

ALICE, BOB, CAROL = "0x" + "a1" * 20, "0x" + "b2" * 20, "0x" + "c3" * 20
KEY = "wsKEY0123456789abcdef"  # stands for the API key in a provider's URL


@pytest.fixture
async def proxy(h: Harness) -> AsyncIterator[WsProxy]:
    async with WsProxy(h.chain.url.replace("http://", "ws://")) as proxy:
        yield proxy


def metric(app: App, name: str, **labels: str) -> float:
    return float(app.metrics.registry.get_sample_value(name, {"chain": CHAIN, **labels}) or 0.0)


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


class Running:
    """The App scanning ``h``'s chain with ``ws_url``, in a task of the test's loop."""

    def __init__(self, h: Harness, ws_url: str, poll_interval: float) -> None:
        chain = chain_settings(
            h.chain.url, [("USDT", h.token, 6)], ws_url=ws_url, poll_interval=poll_interval
        )
        metrics = h.settings.metrics.model_copy(update={"enabled": False})
        self.app = App(h.settings.model_copy(update={"chains": [chain], "metrics": metrics}), {})
        self.task: asyncio.Task[int] | None = None

    def ticks(self) -> int:
        return int(self.app.health.healthy()[1]["chains"].get(CHAIN, {}).get("ticks", 0))

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.app.run())
        await until(lambda: self.ticks() > 0 and self.connected())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.app.stop.set()
        assert self.task is not None
        assert await asyncio.wait_for(self.task, 10) == 0

    def connected(self) -> bool:
        return metric(self.app, "scanner_ws_connected") == 1


async def seconds_until(h: Harness, pid: str, status: str, limit: float = 15.0) -> float:
    """Seconds until the payment's row shows ``status`` (read every 10 ms)."""
    started = time.monotonic()
    await h.until_status(pid, status, limit, every=0.01)
    return time.monotonic() - started


async def idle_after_tick(run: Running, ticks: int) -> None:
    """Wait until the App has finished a tick after the ``ticks``-th: it sleeps then."""
    await until(lambda: run.ticks() > ticks)


async def test_a_new_head_wakes_the_tick_long_before_the_poll(h: Harness, proxy: WsProxy) -> None:
    pid = await h.create_payment(ALICE, "2")
    with capture_logs() as logs:
        async with Running(h, f"{proxy.url}/ws/{KEY}", poll_interval=30.0) as run:
            started = time.monotonic()  # the App sleeps after its first tick
            pay(h, ALICE, 2_000_000)
            waited = await seconds_until(h, pid, "confirming")
            assert time.monotonic() - started < 3.0, waited  # the poll is 30 s away
            assert metric(run.app, "scanner_ws_heads_total") >= 1
    (subscribed,) = events(logs, "ws_subscribed")
    assert subscribed["url"] == f"{proxy.url}/***"
    assert KEY not in str(logs)


async def test_a_replaced_head_from_the_subscription_is_found_as_a_reorg_by_hash(
    h: Harness, proxy: WsProxy
) -> None:
    pid = await h.create_payment(BOB, "1")
    with capture_logs() as logs:
        async with Running(h, proxy.url, poll_interval=30.0) as run:
            ticks = run.ticks()
            pay(h, BOB, 1_000_000)
            await seconds_until(h, pid, "confirming")
            await idle_after_tick(run, ticks)
            started = time.monotonic()
            h.chain.reorg(2)  # same heights, new hashes: the transfer is gone
            await seconds_until(h, pid, "pending")
            assert time.monotonic() - started < 5.0  # woken by the resent heads, not the poll
    (reorg,) = events(logs, "reorg_detected")
    assert reorg["depth"] >= 1
    (tx,) = await h.transactions(pid)
    assert tx["status"] == "orphaned"
    assert (await h.payment(pid))["amount_received"] == 0


async def test_a_dropped_subscription_falls_back_to_polling_and_reconnects(
    h: Harness, proxy: WsProxy
) -> None:
    pid = await h.create_payment(CAROL, "3")
    with capture_logs() as logs:
        async with Running(h, proxy.url, poll_interval=0.3) as run:
            proxy.refuse = True
            proxy.drop()
            await until(lambda: not run.connected())
            pay(h, CAROL, 3_000_000)  # no subscription: the poll finds it
            await seconds_until(h, pid, "confirming", limit=5.0)

            def refused() -> float:
                return metric(run.app, "scanner_ws_disconnects_total", reason="error")

            await until(lambda: refused() >= 1)  # a reconnect was tried, and refused
            assert proxy.connections == 1
            proxy.refuse = False
            await until(run.connected)
            heads = metric(run.app, "scanner_ws_heads_total")
            h.mine(1)
            await until(lambda: metric(run.app, "scanner_ws_heads_total") > heads)
    assert proxy.connections == 2
    assert len(events(logs, "ws_subscribed")) == 2
    dropped = events(logs, "ws_disconnected")
    assert dropped and dropped[0]["reason"] in {"closed", "error"}
    assert any("503" in e["message"] for e in dropped[1:]), dropped  # refused reconnects
    assert await h.status(pid) == "confirming"


async def test_a_quiet_subscription_is_noticed_by_the_poll_and_reconnected(
    h: Harness, proxy: WsProxy
) -> None:
    pid = await h.create_payment(ALICE, "4")
    with capture_logs() as logs:
        async with Running(h, proxy.url, poll_interval=0.3) as run:
            proxy.freeze()  # open, answering pings, forwarding no heads
            pay(h, ALICE, 4_000_000)
            await seconds_until(h, pid, "confirming", limit=5.0)  # the poll carries on
            h.mine(2)  # three blocks the subscription did not deliver
            await until(lambda: proxy.connections == 2 and run.connected())
            reconnects: Callable[[], float] = lambda: metric(  # noqa: E731
                run.app, "scanner_ws_disconnects_total", reason="quiet"
            )
            assert reconnects() == 1
            heads = metric(run.app, "scanner_ws_heads_total")
            h.mine(1)
            await until(lambda: metric(run.app, "scanner_ws_heads_total") > heads)
    (quiet,) = events(logs, "ws_quiet")
    assert quiet["polled"] - quiet["newest"] >= 3


def test_ws_url_is_a_websocket_url_and_a_secret() -> None:
    url = f"wss://eth.example/ws/{KEY}"
    chain = chain_settings("http://127.0.0.1:8545", [], ws_url=url)
    assert isinstance(chain, ChainSettings) and chain.ws_url is not None
    assert KEY not in repr(chain) and KEY not in str(chain.ws_url)
    settings = settings_from("sqlite:///unused.db").model_copy(update={"chains": [chain]})
    assert url in settings.secrets()
    assert KEY not in Scrubber(settings.secrets()).text(f"connect to {url} failed")
    with pytest.raises(
        ValidationError,
        match=r"ws_url must start with ws:// or wss://; this one starts with .https.",
    ):
        chain_settings("http://127.0.0.1:8545", [], ws_url="https://eth.example/")
