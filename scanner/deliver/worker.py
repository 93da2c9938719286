"""The delivery worker: fan out new outbox events, deliver what is due, sleep until woken.

Runs as a task beside the chain scans in ``scanner run`` (and alone as ``scanner deliver``).
State is in the database only: a restart, or ``kill -9`` mid-delivery, loses nothing; what was
in flight is sent again once its lease expires. On PostgreSQL it wakes on ``NOTIFY
payment_events`` and polls as a fallback; on SQLite it polls. Time comes from ``clock`` and the
retry schedule from the settings, so tests run it without waiting for real backoff times.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from scanner.config import WebhookSettings
from scanner.db.errors import DRIVER_ERRORS
from scanner.deliver import store
from scanner.deliver.message import backoff, body, endpoint_key, headers
from scanner.deliver.sender import Outcome, Sender
from scanner.errors import ScannerError
from scanner.observe.webhook_metrics import WebhookMetrics
from scanner.secrets import Scrubber

log = structlog.get_logger(__name__)
Clock = Callable[[], datetime]
LEASE_MARGIN = 10.0  # seconds a lease outlives the attempt's timeout (the result's write)
BACKLOG_EVERY = 5.0  # seconds between backlog gauge refreshes
ERROR_BACKOFF_MAX = 60.0
IDLE_MIN = 0.05  # seconds: the shortest sleep when nothing could be claimed
RELISTEN_EVERY = 5.0  # seconds between attempts to listen again


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Endpoint:
    index: int
    url: str
    secret: str
    settings: WebhookSettings
    route: store.Route

    @property
    def key(self) -> str:
        return self.route.key


def endpoints(hooks: Sequence[WebhookSettings]) -> list[Endpoint]:
    out = []
    for index, hook in enumerate(hooks):
        url = hook.url.get_secret_value()
        chains = frozenset(hook.chains) if hook.chains is not None else None
        route = store.Route(index, endpoint_key(url), frozenset(hook.events), chains)
        out.append(Endpoint(index, url, hook.secret_value, hook, route))
    return out


class DeliveryWorker:
    def __init__(
        self,
        hooks: Sequence[WebhookSettings],
        sessions: async_sessionmaker[AsyncSession],
        *,
        metrics: WebhookMetrics | None = None,
        secrets: Sequence[str] = (),
        clock: Clock = utc_now,
        rand: Callable[[], float] = random.random,
        poll_interval: float = 1.0,
        batch: int = 16,
    ) -> None:
        self.endpoints = endpoints(hooks)
        self._by_key = {e.key: e for e in self.endpoints}
        self.keys = [e.key for e in self.endpoints]
        self.sessions = sessions
        self.metrics = metrics or WebhookMetrics()
        self.clock, self.rand = clock, rand
        self.poll_interval, self.batch = poll_interval, batch
        self.owner = str(uuid.uuid4())
        self.sender = Sender()
        self.wake = asyncio.Event()
        self._scrub = Scrubber([*secrets, *(e.url for e in self.endpoints)])
        self._backlog_at = 0.0
        self.prepared = False
        self._listening: AsyncConnection | None = None
        self._listen_lost = False  # the listening connection ended, or could not be made
        self._listen_after = 0.0  # (monotonic) no new attempt before
        self._driver: object | None = None  # the driver's connection listened on
        for endpoint in self.endpoints:
            self.metrics.add_endpoint(endpoint.index)

    async def prepare(self) -> None:
        """Each endpoint's outbox cursor (new endpoints start at the newest event)."""
        async with self.sessions() as session, session.begin():
            await store.ensure_cursors(session, self.keys)
        self.prepared = True

    async def aclose(self) -> None:
        await self.sender.aclose()

    # -- one pass --------------------------------------------------------------------------

    async def run_once(self) -> bool:
        """Fan out every new event, then attempt one batch of due deliveries. True when there
        may be more to do at once (a full page, or deliveries made)."""
        while True:
            async with self.sessions() as session, session.begin():
                read = await store.fan_out(session, [e.route for e in self.endpoints], self.clock())
            if read < store.FANOUT_PAGE:
                break
        async with self.sessions() as session, session.begin():
            claimed = await store.claim(
                session,
                self.keys,
                self.clock(),
                owner=self.owner,
                lease=max(e.settings.timeout for e in self.endpoints) + LEASE_MARGIN,
                limit=self.batch,
            )
        results = await asyncio.gather(*(self._attempt(c) for c in claimed), return_exceptions=True)
        for result in results:  # every attempt has ended; the first failure is reported
            if isinstance(result, BaseException):
                raise result
        if time.monotonic() - self._backlog_at >= BACKLOG_EVERY:
            await self.refresh_backlog()
        return bool(claimed)

    async def _attempt(self, claimed: store.Claimed) -> None:
        endpoint = self._by_key[claimed.endpoint_key]
        now = self.clock()
        raw = body(claimed.payload, claimed.id, claimed.attempt, claimed.redelivery)
        sent_headers = headers(
            endpoint.secret, int(now.timestamp()), raw, claimed.payload, claimed.id
        )
        outcome = await self.sender.post(
            endpoint.url, raw, sent_headers, endpoint.settings.timeout, now
        )
        values = self._result(endpoint, claimed, outcome, self.clock())
        async with self.sessions() as session, session.begin():
            kept = await store.record(session, claimed.id, self.owner, values)
        self.metrics.attempted(endpoint.index, outcome.label, outcome.seconds)
        if values["status"] == "failed":
            self.metrics.gave_up(endpoint.index)
        self._log(endpoint, claimed, outcome, values, kept)

    def _result(
        self, endpoint: Endpoint, claimed: store.Claimed, outcome: Outcome, now: datetime
    ) -> dict[str, Any]:
        values: dict[str, Any] = {
            "last_status": outcome.status,
            "last_error": None if outcome.error is None else self._scrub.text(outcome.error),
            "updated_at": now,
        }
        if outcome.delivered:
            return {**values, "status": "delivered", "delivered_at": now}
        if claimed.attempt >= endpoint.settings.max_attempts:
            return {**values, "status": "failed"}
        return {
            **values,
            "status": "pending",
            "next_attempt_at": now + self._delay(endpoint, claimed, outcome),
        }

    def _delay(self, endpoint: Endpoint, claimed: store.Claimed, outcome: Outcome) -> timedelta:
        """The schedule's delay, or longer if a ``Retry-After`` asks so (never shorter: a
        ``Retry-After: 0`` must not burn every attempt in seconds), at most ``retry_max``."""
        hook = endpoint.settings
        seconds = backoff(claimed.attempt, hook.retry_base, hook.retry_max, self.rand)
        if outcome.retry_after is not None:
            seconds = min(max(seconds, outcome.retry_after), hook.retry_max)
        return timedelta(seconds=seconds)

    def _log(
        self,
        endpoint: Endpoint,
        claimed: store.Claimed,
        outcome: Outcome,
        values: dict[str, Any],
        kept: bool,
    ) -> None:
        fields = {
            "endpoint": endpoint.index,
            "event_id": claimed.event_id,
            "delivery_id": str(claimed.id),
            "attempt": claimed.attempt,
            "http_status": outcome.status,
            "seconds": round(outcome.seconds, 3),
        }
        if not kept:
            log.warning("webhook_lease_lost", **fields)
        elif outcome.delivered:
            log.info("webhook_delivered", **fields)
        elif values["status"] == "failed":
            log.error("webhook_delivery_failed", error=values["last_error"], **fields)
        else:
            retry_at = values["next_attempt_at"]
            log.warning(
                "webhook_attempt_failed",
                error=values["last_error"],
                retry_in=round((retry_at - values["updated_at"]).total_seconds(), 3),
                **fields,
            )

    async def refresh_backlog(self) -> None:
        """The pending-deliveries gauges (count, age of the oldest undelivered event)."""
        self._backlog_at = time.monotonic()
        async with self.sessions() as session:
            pending = await store.backlog(session, self.keys)
        now = self.clock()
        for endpoint in self.endpoints:
            count, oldest = pending.get(endpoint.key, (0, None))
            age = (now - oldest).total_seconds() if oldest is not None else 0.0
            self.metrics.backlog(endpoint.index, count, max(0.0, age))

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, engine: AsyncEngine | None = None) -> None:
        """Until ``stop``: passes while there is work, else sleep until woken, due or polled.
        Errors are logged and retried with backoff; they never end the task (nor the scans)."""
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self.aclose)
            stack.push_async_callback(self._unlisten)
            if engine is not None:
                await self._listen(engine)
            log.info("webhook_worker_started", endpoints=len(self.endpoints))
            pause = 1.0
            while not stop.is_set():
                try:
                    self.wake.clear()  # (before the look at the listener: its end wakes again)
                    if engine is not None and self._listen_lost:
                        await self._listen(engine)
                    if not self.prepared:
                        await self.prepare()
                    if not await self.run_once():
                        await self._idle(stop)
                    pause = 1.0
                    continue
                except (ScannerError, OSError) as exc:
                    self._failed(exc, pause)
                except Exception as exc:  # a bug here must not stop the chain scans beside it
                    self._failed(exc, pause, unexpected=True)
                await _wait(stop, pause)
                pause = min(ERROR_BACKOFF_MAX, pause * 2)
        log.info("webhook_worker_stopped")

    def _failed(self, exc: Exception, pause: float, *, unexpected: bool = False) -> None:
        fields = {"error": type(exc).__name__, "message": self._scrub.text(str(exc))}
        if unexpected:
            log.exception("webhook_worker_crashed", retry_in=pause, **fields)
        else:
            log.error("webhook_worker_error", retry_in=pause, **fields)

    async def _idle(self, stop: asyncio.Event) -> None:
        async with self.sessions() as session:
            due = await store.next_due(session, self.keys, self.clock())
        timeout = self.poll_interval
        if due is not None:  # never below IDLE_MIN: rows another claim holds become leased
            timeout = min(timeout, max(IDLE_MIN, (due - self.clock()).total_seconds()))
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _listen(self, engine: AsyncEngine) -> None:
        """``LISTEN payment_events`` on a connection of its own (PostgreSQL only). A connection
        that ends (a failover, a restarted server) wakes the worker, which listens again on its
        next pass (at most every :data:`RELISTEN_EVERY` s while that fails)."""
        if engine.dialect.name != "postgresql" or time.monotonic() < self._listen_after:
            return
        await self._unlisten()
        try:
            self._listening = conn = await engine.connect()
            driver: Any = (await conn.get_raw_connection()).driver_connection
            await driver.add_listener("payment_events", lambda *_: self.wake.set())
            driver.add_termination_listener(self._lost_listener)
            self._driver = driver
        except DRIVER_ERRORS as exc:  # a raw connection: not a translating session
            self._listen_after = time.monotonic() + RELISTEN_EVERY
            if not self._listen_lost:  # said once until it listens again
                log.warning(
                    "webhook_listen_failed", error=type(exc).__name__, poll=self.poll_interval
                )
            self._listen_lost = True
            return
        if self._listen_lost:
            log.info("webhook_listening_again")
        self._listen_lost = False

    def _lost_listener(self, driver: object, *_: object) -> None:
        if driver is self._driver:  # (not one this worker closed itself)
            self._listen_lost = True
            self.wake.set()

    async def _unlisten(self) -> None:
        """The listening connection closed, never handed back to the pool (it listens)."""
        conn, self._listening, self._driver = self._listening, None, None
        if conn is not None:
            with suppress(*DRIVER_ERRORS):
                await conn.invalidate()
            with suppress(*DRIVER_ERRORS):
                await conn.close()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
