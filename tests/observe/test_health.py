from __future__ import annotations

import asyncio

import httpx
import pytest

from scanner.config import MetricsSettings
from scanner.observe.health import Health, ObserveServer
from scanner.observe.metrics import Metrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def db_ok() -> str | None:
    return None


async def db_behind() -> str | None:
    return "schema at 0003, code expects 0004"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> Health:
    health = Health(clock=clock)
    health.register("eth", poll_interval=2.0, max_lag=50)  # stale after max(6, 10) = 10 s
    health.register("base", poll_interval=5.0, max_lag=50)  # stale after 15 s
    return health


def test_healthy_until_a_chain_stops_ticking(health: Health, clock: FakeClock) -> None:
    health.ticked("eth", head=100, cursor=100)
    health.ticked("base", head=10, cursor=9)
    clock.now += 10.0
    ok, body = health.healthy()
    assert ok and body["chains"]["eth"]["ok"]
    health.ticked("base", head=11, cursor=11)
    clock.now += 0.5
    ok, body = health.healthy()
    assert not ok
    assert not body["chains"]["eth"]["ok"] and body["chains"]["base"]["ok"]
    assert body["chains"]["eth"]["seconds_since_tick"] == 10.5


def test_a_chain_that_never_ticks_goes_stale(health: Health, clock: FakeClock) -> None:
    assert health.healthy()[0]
    clock.now += 10.5
    assert not health.healthy()[0]


def test_a_halted_chain_does_not_fail_liveness(health: Health, clock: FakeClock) -> None:
    health.ticked("eth", head=100, cursor=100)
    health.halted("eth", "reorg deeper than max_reorg_depth=64")
    for _ in range(10):
        clock.now += 9.0
        health.ticked("base", head=10, cursor=10)
    ok, body = health.healthy()
    assert ok
    assert body["chains"]["eth"]["halted"] is True
    assert body["chains"]["eth"]["halt_reason"] == "reorg deeper than max_reorg_depth=64"
    health.resumed("eth")  # the staleness bound restarts from the resumption
    clock.now += 9.0
    assert health.healthy()[0]
    clock.now += 2.0
    assert not health.healthy()[0]


async def test_ready_reasons(health: Health) -> None:
    ok, body = await health.ready(db_ok)
    assert not ok
    assert body["reasons"] == ["chain eth: not scanned yet", "chain base: not scanned yet"]
    health.ticked("eth", head=100, cursor=100)
    health.ticked("base", head=100, cursor=49)
    ok, body = await health.ready(db_ok)
    assert not ok and body["reasons"] == ["chain base: lag 51 blocks > max_lag 50"]
    health.ticked("base", head=100, cursor=50)
    ok, body = await health.ready(db_ok)
    assert ok and body == {**body, "ready": True, "reasons": [], "database": "ok"}


async def test_halted_chain_is_not_ready(health: Health) -> None:
    health.ticked("eth", head=100, cursor=100)
    health.ticked("base", head=100, cursor=100)
    health.halted("eth", "the node reports chain id 5, the configuration says 1")
    ok, body = await health.ready(db_ok)
    assert health.healthy()[0]
    assert not ok
    assert body["reasons"] == [
        "chain eth: halted: the node reports chain id 5, the configuration says 1"
    ]
    health.resumed("eth")
    ok, body = await health.ready(db_ok)
    assert body["reasons"] == []  # it had ticked before; lag is still known
    assert ok


async def test_database_problems_make_it_unready(health: Health) -> None:
    health.ticked("eth", head=1, cursor=1)
    health.ticked("base", head=1, cursor=1)
    ok, body = await health.ready(db_behind)
    assert not ok
    assert body["database"] == "schema at 0003, code expects 0004"
    assert body["reasons"] == ["database: schema at 0003, code expects 0004"]

    async def db_raises() -> str | None:
        raise ConnectionRefusedError("postgresql://app:pw1234@db/x refused")

    ok, body = await health.ready(db_raises)
    assert not ok
    assert body["reasons"] == [
        "database: check failed: ConnectionRefusedError: postgresql://app:***@db/x refused"
    ]


async def test_a_hanging_database_check_times_out(clock: FakeClock) -> None:
    health = Health(clock=clock, db_check_seconds=0.01)

    async def db_hangs() -> str | None:
        await asyncio.sleep(10)
        return None

    ok, body = await health.ready(db_hangs)
    assert not ok and body["reasons"] == ["database: check timed out after 0.01 s"]


def test_unknown_chain_is_an_error(health: Health) -> None:
    with pytest.raises(KeyError, match="not registered"):
        health.ticked("polygon", head=1, cursor=1)


async def test_server_answers_real_http(health: Health, clock: FakeClock) -> None:
    metrics = Metrics()
    metrics.add_chain("eth")
    health.ticked("eth", head=100, cursor=100)
    health.ticked("base", head=100, cursor=100)
    settings = MetricsSettings(host="127.0.0.1", port=0)
    async with (
        ObserveServer(settings, metrics=metrics, health=health, db_check=db_ok) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client,
    ):
        assert server.port > 0
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert 'scanner_chain_halted{chain="eth"} 0.0' in response.text
        assert "process_cpu_seconds_total" in response.text

        response = await client.get("/healthz")
        assert response.status_code == 200 and response.json()["healthy"] is True
        response = await client.get("/readyz")
        assert response.status_code == 200 and response.json()["reasons"] == []

        clock.now += 11
        health.ticked("base", head=101, cursor=101)
        response = await client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["chains"]["eth"]["ok"] is False

        health.halted("eth", "deep reorg")
        response = await client.get("/healthz")
        assert response.status_code == 200
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["reasons"] == ["chain eth: halted: deep reorg"]
        assert (await client.get("/nowhere")).status_code == 404


async def test_server_stops_and_frees_the_port(health: Health) -> None:
    server = ObserveServer(
        MetricsSettings(port=0), metrics=Metrics(), health=health, db_check=db_ok
    )
    with pytest.raises(RuntimeError):
        _ = server.port
    await server.start()
    port = server.port
    await server.stop()
    await server.stop()  # idempotent
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/healthz")


async def test_a_standby_chain_is_alive_and_ready(health: Health, clock: FakeClock) -> None:
    """Another instance holds the chain: this one is a healthy standby (alive and ready), and
    the standby shows in the body; a chain it holds but has not scanned yet is not ready."""
    health.standby("eth")
    health.standby("base")
    clock.now += 8.0
    health.standby("eth")
    health.standby("base")
    assert health.healthy()[0]
    ok, body = await health.ready(db_ok)
    assert ok, body["reasons"]
    assert body["chains"]["eth"]["standby"] is True
    clock.now += 60.0  # a standby that goes on standing by stays alive while its loop runs
    health.standby("eth")
    health.ticked("base", head=61, cursor=10)  # took "base" over: now its lag counts
    ok, body = await health.ready(db_ok)
    assert not ok and body["reasons"] == ["chain base: lag 51 blocks > max_lag 50"], body
    assert body["chains"]["eth"]["standby"] is True and body["chains"]["base"]["standby"] is False


async def test_a_stalled_chain_is_alive_but_not_ready(health: Health, clock: FakeClock) -> None:
    """Every node of the chain stopped moving: the loop goes on (alive), the chain waits (not
    ready) until a node moves again."""
    health.ticked("eth", head=10, cursor=10)
    health.ticked("base", head=10, cursor=10)
    health.stalled("eth", "every RPC URL is stalled; newest head 10 is 900 s old")
    assert health.healthy()[0]
    ok, body = await health.ready(db_ok)
    assert not ok
    assert body["reasons"] == [
        "chain eth: stalled: every RPC URL is stalled; newest head 10 is 900 s old"
    ]
    assert body["chains"]["eth"]["stalled"]
    health.stalled("eth", None)
    assert (await health.ready(db_ok))[0]
