from __future__ import annotations

import asyncio
import socket

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


async def test_a_chain_this_instance_fails_to_scan_is_no_standby(
    health: Health, clock: FakeClock
) -> None:
    """The chain loop's first look came before the lease was claimed (a standby for a moment);
    then every tick fails (a revoked key): not ready, and not shown as a standby."""
    health.ticked("base", head=10, cursor=10)
    health.standby("eth")
    assert (await health.ready(db_ok))[0]
    health.retrying("eth", "MalformedResponse: eth_chainId: HTTP 401")
    ok, body = await health.ready(db_ok)
    assert not ok and body["reasons"] == ["chain eth: not scanned yet"], body
    assert body["chains"]["eth"]["standby"] is False and body["chains"]["eth"]["ticks"] == 0
    clock.now += 11.0
    health.retrying("eth", "MalformedResponse: eth_chainId: HTTP 401")
    health.ticked("base", head=11, cursor=11)
    ok, body = await health.ready(db_ok)
    assert body["reasons"] == [
        "chain eth: no tick done for 11 s: MalformedResponse: eth_chainId: HTTP 401"
    ]


async def test_a_chain_nobody_holds_is_no_standby(health: Health, clock: FakeClock) -> None:
    """No other live instance holds the chain and this one has not claimed it (yet): alive, not
    ready; it was scanned before (a hand-over): ready until the staleness bound, then not."""
    health.ticked("base", head=10, cursor=10)
    health.unheld("eth")
    assert health.healthy()[0]
    ok, body = await health.ready(db_ok)
    assert not ok and body["reasons"] == ["chain eth: not scanned yet"]
    assert body["chains"]["eth"]["standby"] is False
    health.ticked("eth", head=10, cursor=10)
    health.unheld("eth")
    assert (await health.ready(db_ok))[0]
    clock.now += 11.0
    health.unheld("eth")
    health.ticked("base", head=11, cursor=11)
    ok, body = await health.ready(db_ok)
    assert body["reasons"] == ["chain eth: no tick done for 11 s: no live instance holds the chain"]


async def idle_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections to the port that send nothing (non-blocking), opened on this event
    loop one at a time, each accepted by the server before the next is opened: the server sees
    them in the order of the list, whatever else runs beside the test."""
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            for _ in range(3):  # the listener is read, the connection accepted, then made
                await asyncio.sleep(0)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


async def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closed the connection (EOF) within ``within`` seconds."""
    sock.settimeout(0)
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        try:
            return sock.recv(1) == b""
        except BlockingIOError:
            await asyncio.sleep(0.02)
        except ConnectionResetError:
            return True
    return False


async def test_idle_connections_do_not_keep_healthz_from_answering(health: Health) -> None:
    """Forty connections that send nothing against a cap of eight: the oldest idle ones make
    room, so the server holds at most eight, and /healthz still answers at once."""
    settings = MetricsSettings(port=0, max_connections=8, header_timeout=30.0)
    async with ObserveServer(settings, metrics=Metrics(), health=health, db_check=db_ok) as server:
        socks = await idle_connections(server.port, 40)
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                response = await client.get(f"http://127.0.0.1:{server.port}/healthz")
            assert response.status_code == 200 and response.json()["healthy"] is True
            closed = [await closed_by_server(s, 0.5) for s in socks]
            assert sum(closed) >= 40 - 8 + 1, closed  # the 40 and the probe: 8 left at most
            assert not any(closed[-7:])  # the newest stay
        finally:
            for s in socks:
                s.close()


async def test_a_connection_that_sends_no_whole_header_is_closed(health: Health) -> None:
    settings = MetricsSettings(port=0, header_timeout=0.3)
    async with ObserveServer(settings, metrics=Metrics(), health=health, db_check=db_ok) as server:
        silent, dribbling = await idle_connections(server.port, 2)
        try:
            dribbling.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
            started = asyncio.get_running_loop().time()
            assert await closed_by_server(silent, 3.0)
            assert await closed_by_server(dribbling, 3.0)
            assert asyncio.get_running_loop().time() - started < 2.0
            async with httpx.AsyncClient(timeout=2.0) as client:  # a whole request is served
                response = await client.get(f"http://127.0.0.1:{server.port}/healthz")
                assert response.status_code == 200
                assert (
                    await client.post(f"http://127.0.0.1:{server.port}/healthz")
                ).status_code == 405
        finally:
            silent.close()
            dribbling.close()
