"""Liveness and readiness, and the HTTP server that shows them with the metrics.

``/healthz`` answers "would a restart help?": it fails only when a running chain stopped making
progress (no tick within ``max(3 × poll_interval, 10 s)``). A halted chain waits for an operator,
which a restart would not replace, so it does not fail liveness.

``/readyz`` answers "is this scanner doing its job?": the database is reachable and at the
schema head, no chain is halted or stalled (every RPC URL's head stopped moving), and every
chain it scans has ticked and is within ``max_lag`` blocks (a chain another instance holds does
not count: an instance that holds nothing is a ready standby).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web

from scanner.config import MetricsSettings
from scanner.observe.guard import GuardedServer
from scanner.observe.metrics import Metrics
from scanner.secrets import Scrubber

Clock = Callable[[], float]
DbCheck = Callable[[], Awaitable[str | None]]
MIN_STALE_SECONDS = 10.0
STALE_POLL_INTERVALS = 3
DB_CHECK_SECONDS = 5.0


@dataclass
class _Chain:
    poll_interval: float
    max_lag: int
    since: float  # the loop's last round (a tick, or a failed one), or registration / resumption
    registered: float
    committed: float = 0.0  # the last tick that did its work (0: none yet)
    failing: str | None = None  # why the last round failed (it is being retried)
    ticks: int = 0
    head: int | None = None
    cursor: int | None = None
    halted: str | None = None
    standby: bool = False  # another process holds the chain; this one waits to take over
    stalled: str | None = None  # every RPC URL's head stopped moving

    @property
    def lag(self) -> int | None:
        if self.head is None or self.cursor is None:
            return None
        return max(0, self.head - self.cursor)

    @property
    def stale_after(self) -> float:
        return max(STALE_POLL_INTERVALS * self.poll_interval, MIN_STALE_SECONDS)

    def alive(self, now: float) -> bool:
        return self.halted is not None or now - self.since <= self.stale_after

    def not_ready(self, now: float) -> list[str]:
        if self.halted is not None:
            return [f"halted: {self.halted}"]
        if self.standby:
            return []  # another instance scans it: this one is a healthy standby
        if self.stalled is not None:
            return [f"stalled: {self.stalled}"]
        idle = now - max(self.committed, self.registered)
        if self.failing is not None and idle > self.stale_after:
            return [f"no tick done for {idle:.0f} s: {self.failing}"]
        if self.ticks == 0:
            return ["not scanned yet"]
        if self.lag is not None and self.lag > self.max_lag:
            return [f"lag {self.lag} blocks > max_lag {self.max_lag}"]
        return []

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "ok": self.alive(now),
            "halted": self.halted is not None,
            "halt_reason": self.halted,
            "standby": self.standby,
            "stalled": self.stalled,
            "failing": self.failing,
            "ticks": self.ticks,
            "seconds_since_tick": round(now - self.since, 3),
            "stale_after_seconds": self.stale_after,
            "head": self.head,
            "cursor": self.cursor,
            "lag": self.lag,
            "max_lag": self.max_lag,
        }


class Health:
    """Per-chain progress, kept by the chain tasks and read by the health endpoints."""

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        secrets: Sequence[str] = (),
        db_check_seconds: float = DB_CHECK_SECONDS,
    ) -> None:
        self._clock = clock
        self._db_check_seconds = db_check_seconds
        self._chains: dict[str, _Chain] = {}
        self._scrubber = Scrubber(secrets)

    def register(self, chain: str, poll_interval: float, max_lag: int) -> None:
        now = self._clock()
        self._chains[chain] = _Chain(poll_interval, max_lag, since=now, registered=now)

    def ticked(self, chain: str, head: int, cursor: int) -> None:
        """The chain's loop went round: ``head`` seen on the node, ``cursor`` scanned up to."""
        state = self._chain(chain)
        state.since = state.committed = self._clock()
        state.failing = None
        state.ticks += 1
        state.head, state.cursor = head, cursor
        state.standby = False

    def retrying(self, chain: str, reason: str) -> None:
        """The chain's loop went round but its tick failed and is retried (a payment row the
        gateway holds locked, a database or node away). Alive: a restart would not help; not
        ready once no tick has done its work for the staleness bound."""
        state = self._chain(chain)
        state.since = self._clock()
        state.failing = self._scrubber.text(reason)
        state.standby = False  # it tried to scan: the chain is this instance's, not another's

    def standby(self, chain: str) -> None:
        """The chain's loop went round without scanning: another live process holds the chain.
        Alive (a restart would not help) and ready: a standby is healthy, the holder reports the
        chain's progress (``scanner status`` shows who holds it)."""
        state = self._chain(chain)
        state.since = self._clock()
        state.standby = True

    def unheld(self, chain: str) -> None:
        """The chain's loop went round without scanning, and no other live instance holds the
        chain either (this one has not claimed it yet, or it is between holders). Alive; not a
        standby: not ready before its first tick, nor once no tick has done its work for the
        staleness bound."""
        state = self._chain(chain)
        state.since = self._clock()
        state.standby = False
        state.failing = "no live instance holds the chain"

    def stalled(self, chain: str, reason: str | None) -> None:
        """Every RPC URL of the chain is stalled (``reason``), or not any more (``None``).
        Not ready; alive (the loop goes on, waiting for a node to move)."""
        self._chain(chain).stalled = None if reason is None else self._scrubber.text(reason)

    def halted(self, chain: str, reason: str) -> None:
        self._chain(chain).halted = self._scrubber.text(reason)

    def resumed(self, chain: str) -> None:
        state = self._chain(chain)
        state.halted = None
        state.since = self._clock()  # the staleness bound runs from now

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        now = self._clock()
        chains = {name: state.snapshot(now) for name, state in self._chains.items()}
        ok = all(c["ok"] for c in chains.values())
        return ok, {"healthy": ok, "chains": chains}

    async def ready(self, db_check: DbCheck) -> tuple[bool, dict[str, Any]]:
        problem = await self._database_problem(db_check)
        reasons = [] if problem is None else [f"database: {problem}"]
        now = self._clock()
        for name, state in self._chains.items():
            reasons += [f"chain {name}: {why}" for why in state.not_ready(now)]
        body = {
            "ready": not reasons,
            "reasons": reasons,
            "database": problem or "ok",
            "chains": {name: state.snapshot(now) for name, state in self._chains.items()},
        }
        return not reasons, body

    async def _database_problem(self, db_check: DbCheck) -> str | None:
        try:
            async with asyncio.timeout(self._db_check_seconds):
                problem = await db_check()
        except TimeoutError:
            return f"check timed out after {self._db_check_seconds:g} s"
        except Exception as exc:  # the check's own failure is a readiness answer, not a 500
            return f"check failed: {type(exc).__name__}: {self._scrubber.text(str(exc))}"
        return None if problem is None else self._scrubber.text(problem)

    def _chain(self, chain: str) -> _Chain:
        try:
            return self._chains[chain]
        except KeyError:
            raise KeyError(f"chain {chain!r} is not registered with Health") from None


class ObserveServer:
    """``GET /metrics``, ``/healthz`` and ``/readyz`` on ``settings.host:settings.port``.

    Port 0 picks a free port; :attr:`port` tells which once started. Whether to run the server
    at all when ``settings.enabled`` is false is the caller's choice. Connections are capped and
    must send their request header in time (:class:`~scanner.observe.guard.GuardedServer`).
    """

    def __init__(
        self,
        settings: MetricsSettings,
        *,
        metrics: Metrics,
        health: Health,
        db_check: DbCheck,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._health = health
        self._db_check = db_check
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.BaseRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("ObserveServer is not started")
        return self._port

    async def start(self) -> None:
        if self._runner is not None:
            return
        server = GuardedServer(
            self._route,
            max_connections=self._settings.max_connections,
            header_timeout=self._settings.header_timeout,
        )
        runner = web.ServerRunner(server, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        try:
            # asyncio accepts up to ``backlog`` connections at a time before the cap sees any
            await web.TCPSite(
                runner,
                self._settings.host,
                self._settings.port,
                backlog=self._settings.max_connections,
            ).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner, self._port = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        pages = {"/metrics": self._get_metrics, "/healthz": self._get_healthz}
        page = self._get_readyz if request.path == "/readyz" else pages.get(request.path)
        if page is None:
            return web.Response(status=404, text="404: Not Found")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, headers={"Allow": "GET, HEAD"})
        return await page(request)

    async def _get_metrics(self, request: web.BaseRequest) -> web.Response:
        body, content_type = self._metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _get_healthz(self, request: web.BaseRequest) -> web.Response:
        ok, body = self._health.healthy()
        return web.json_response(body, status=200 if ok else 503)

    async def _get_readyz(self, request: web.BaseRequest) -> web.Response:
        ok, body = await self._health.ready(self._db_check)
        return web.json_response(body, status=200 if ok else 503)
