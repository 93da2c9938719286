"""``scanner run``: the daemon's lifecycle.

    schema check ─▶ observe server ─▶ lease keeper (PostgreSQL) ─▶ one task per chain
    (TaskGroup) ─▶ READY=1 once every chain read its first head (or is halted, or is another
    instance's)
    SIGTERM/SIGINT ─▶ STOPPING=1, no new ranges, the batch in flight commits, pools close, exit 0
    a second signal ─▶ exit at once (what was committed stays committed)

A chain that fails transiently is retried with backoff; a chain that must halt (chain id
mismatch, deep reorg, token conflict) stays halted, visible in /readyz and a metric, while the
other chains go on. On PostgreSQL the chains are shared with other instances under leases
(:mod:`scanner.scan.leases`): a chain whose lease is lost stops at once (``chain_lease_lost``)
and scans again only once it holds the chain again; SQLite runs one process
(:mod:`scanner.scan.writer`);
a chain whose every node is stalled waits and is not ready (:mod:`scanner.chain.stall`).
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, suppress
from dataclasses import replace

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.chain.heads import HEAD_MESSAGE_BYTES, HeadSubscription
from scanner.chain.reader import ChainReader
from scanner.chain.stall import HeadWatch
from scanner.config import ChainSettings, Settings
from scanner.db.engine import make_engine, make_session_factory
from scanner.db.migrate import ensure_schema, head_revision
from scanner.deliver.commands import need_webhooks
from scanner.deliver.worker import DeliveryWorker
from scanner.errors import EXIT_INTERRUPTED, ChainHalted, ChainLockLost, ConfigError, ScannerError
from scanner.observe.health import Health, ObserveServer
from scanner.observe.metrics import Metrics
from scanner.observe.sdnotify import SystemdNotifier
from scanner.scan.leases import ChainLease, LeaseKeeper
from scanner.scan.live import ChainScanner
from scanner.scan.parts import ChainParts
from scanner.scan.sweep import Sweep
from scanner.scan.verify import Verifier
from scanner.scan.writer import ChainWriterLock
from scanner.secrets import redact_url

log = structlog.get_logger(__name__)
MAX_BACKOFF = 60.0


class App:
    """Everything ``scanner run`` holds, built from settings and torn down in reverse."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = os.environ if environ is None else environ
        self.metrics = Metrics(secrets=settings.secrets())
        self.health = Health(secrets=settings.secrets())
        self.notifier = SystemdNotifier(self.environ)
        self.stop = asyncio.Event()
        self._signals = 0
        self._started: dict[str, asyncio.Event] = {}
        self._standby: set[str] = set()  # chains another process holds, while it does
        self.engine: AsyncEngine | None = None
        self.keeper: LeaseKeeper | None = None  # PostgreSQL: chains shared under leases

    async def run(self) -> int:
        await ensure_schema(self.settings)
        async with AsyncExitStack() as stack:
            self.engine = make_engine(self.settings)
            stack.push_async_callback(self.engine.dispose)
            sessions = make_session_factory(self.engine)
            if self.engine.dialect.name == "postgresql":
                names = [c.name for c in self.settings.chains]
                ttl = self.settings.cluster.lease_seconds
                self.keeper = LeaseKeeper(sessions, names, ttl, metrics=self.metrics)
            server = await self._observe_server(sessions, stack)
            self._install_signals()
            chains = [self._parts(chain, sessions, stack) for chain in self.settings.chains]
            log.info(
                "scanner_started",
                chains=[c.name for c in self.settings.chains],
                database=redact_url(self.settings.database_url.get_secret_value()),
                metrics_port=server.port if server else None,
            )
            await self._supervise(chains, sessions)
        log.info("scanner_stopped")
        return 0

    def _parts(
        self,
        chain: ChainSettings,
        sessions: async_sessionmaker[AsyncSession],
        stack: AsyncExitStack,
    ) -> ChainParts:
        """A chain's reader, verifier and sweep (closed with the app); its loop adds the rest."""
        reader = ChainReader.from_settings(chain, self.metrics)
        stack.push_async_callback(reader.client.aclose)
        parts = ChainParts(chain, reader, sessions, metrics=self.metrics, stopping=self.stop.is_set)
        if chain.verify_urls:
            verifier = Verifier(chain, sessions, metrics=self.metrics)
            stack.push_async_callback(verifier.aclose)
            parts = replace(parts, verifier=verifier)
        if chain.sweep:
            sweep = Sweep(chain, reader, sessions, metrics=self.metrics)
            stack.push_async_callback(sweep.aclose)
            parts = replace(parts, sweep=sweep)
        self.health.register(chain.name, chain.poll_interval, chain.max_lag_blocks)
        self.metrics.add_chain(chain.name)
        self._started[chain.name] = asyncio.Event()
        return parts

    async def _observe_server(
        self, sessions: async_sessionmaker[AsyncSession], stack: AsyncExitStack
    ) -> ObserveServer | None:
        if not self.settings.metrics.enabled:
            return None
        head = head_revision()

        async def db_check() -> str | None:
            try:
                async with sessions() as session:
                    rev = (
                        await session.execute(text("SELECT version_num FROM alembic_version"))
                    ).scalar_one_or_none()
            except ScannerError as exc:  # DatabaseError: translated at the db edge
                return f"database unreachable: {exc}"
            return None if rev == head else f"schema at {rev}, code expects {head}"

        server = ObserveServer(
            self.settings.metrics, metrics=self.metrics, health=self.health, db_check=db_check
        )
        try:
            await server.start()
        except OSError as exc:  # the address is taken, or not this host's
            where = f"{self.settings.metrics.host}:{self.settings.metrics.port}"
            raise ConfigError(
                f"metrics address {where} cannot be served: {exc.strerror or exc}{_taken(exc)} "
                "(set [metrics] port or SCANNER_METRICS_ADDR; port 0 takes any free port)",
                key="metrics.port",
            ) from None
        stack.push_async_callback(server.stop)
        log.info("metrics_serving", host=self.settings.metrics.host, port=server.port)
        return server

    async def _supervise(
        self, chains: list[ChainParts], sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        async with asyncio.TaskGroup() as group:
            deliver = await self._delivery_worker(sessions)  # its cursors before any scan
            if self.keeper is not None:
                group.create_task(self.keeper.run())  # stopped below, after the chain loops
            loops = [group.create_task(self._chain_loop(parts)) for parts in chains]
            if deliver is not None:
                loops.append(group.create_task(deliver.run(self.stop, self.engine)))
            helper = group.create_task(self._notify_ready())
            watchdog = group.create_task(
                self.notifier.run_watchdog(lambda: self.health.healthy()[0])
            )
            await self.stop.wait()
            self.notifier.stopping()
            log.info("shutdown_requested", timeout=self.settings.shutdown_timeout)
            helper.cancel()
            watchdog.cancel()
            _, still = await asyncio.wait(loops, timeout=self.settings.shutdown_timeout)
            for task in still:
                log.warning("shutdown_timeout_cancelling", task=task.get_name())
                task.cancel()
            if self.keeper is not None:
                self.keeper.stop()  # the chains are handed over once no batch is in flight
        self.notifier.close()

    async def _delivery_worker(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> DeliveryWorker | None:
        """The webhook worker, its outbox cursors set (None without ``[[webhooks]]``)."""
        if not self.settings.webhooks:
            return None
        worker = DeliveryWorker(
            self.settings.webhooks,
            sessions,
            metrics=self.metrics.webhooks,
            secrets=self.settings.secrets(),
        )
        with suppress(ScannerError, OSError):  # else its loop prepares, retrying
            await worker.prepare()
        return worker

    async def _notify_ready(self) -> None:
        await asyncio.gather(*(e.wait() for e in self._started.values()))
        self.notifier.ready()
        standby = sorted(self._standby)
        scanning = sorted(set(self._started) - self._standby)
        log.info("scanner_ready", scanning=scanning, standing_by=standby)
        while True:
            self.notifier.status(self._status_line())
            await asyncio.sleep(5)

    def _status_line(self) -> str:
        _, body = self.health.healthy()
        chains = body.get("chains", {})
        parts = [f"{name}: lag {info.get('lag')}" for name, info in chains.items()]
        return "; ".join(parts) or "no chains"

    async def _chain_loop(self, parts: ChainParts) -> None:
        structlog.contextvars.bind_contextvars(chain=parts.name)
        writer: ChainLease | ChainWriterLock
        if self.keeper is not None:
            writer = self.keeper.chain(parts.name)
        else:
            writer = ChainWriterLock(self.settings, parts.name)
        heads = self._subscription(parts.settings)
        read_head = self._head_reader(parts, heads)
        scanner = ChainScanner(
            replace(
                parts, fence=writer.fence, idle_seconds=writer.idle_seconds, read_head=read_head
            )
        )
        backoff = 1.0
        try:
            if heads is not None:
                heads.start()
            while not self.stop.is_set():
                backoff = await self._round(scanner, writer, heads, backoff)
        finally:
            await scanner.stop_book()
            if heads is not None:
                await heads.aclose()
            await writer.release()

    async def _round(
        self,
        scanner: ChainScanner,
        writer: ChainLease | ChainWriterLock,
        heads: HeadSubscription | None,
        backoff: float,
    ) -> float:
        """One round of a chain's loop: a tick when this process holds the chain, and the wait
        after it; the backoff the next error waits."""
        try:
            if not await writer.acquire():
                self._not_held(scanner.name, writer)
                # look again as often as leases change hands, not only every poll
                lease_step = self.settings.cluster.lease_seconds / 4
                await self._sleep(min(scanner.settings.poll_interval, lease_step))
                return backoff
            self._standby.discard(scanner.name)
            started = time.monotonic()
            outcome = await self._tick(scanner)
            backoff = 1.0
            if outcome:  # polls keep their cadence; a new head ends the wait early
                await self._sleep(self._until_poll(scanner, started), heads)
        except ChainHalted as exc:
            self._halt(scanner, exc)
            await self.stop.wait()
        except ChainLockLost as exc:
            await scanner.stop_book()
            await writer.lost(str(exc))  # the next round takes it again, or waits
        except ScannerError as exc:
            log.error("chain_error", error=type(exc).__name__, message=str(exc), retry_in=backoff)
            self.health.retrying(scanner.name, f"{type(exc).__name__}: {exc}")
            await self._sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)
        return backoff

    def _not_held(self, chain: str, writer: ChainLease | ChainWriterLock) -> None:
        """A standby only while another live instance holds the chain (then READY=1 need not
        wait for it); a chain nobody holds yet is not ready until this instance scans it."""
        if writer.held_elsewhere():
            self._standby.add(chain)
            self.health.standby(chain)
            self._started[chain].set()
        else:
            self.health.unheld(chain)

    @staticmethod
    def _until_poll(scanner: ChainScanner, started: float) -> float:
        """The rest of the poll interval counted from the tick's start (a tenth at least)."""
        interval = scanner.settings.poll_interval
        return max(interval / 10, interval - (time.monotonic() - started))

    def _subscription(self, chain: ChainSettings) -> HeadSubscription | None:
        """The chain's newHeads subscription (``ws_url``): it wakes ticks; polling stays."""
        if chain.ws_url is None:
            return None
        return HeadSubscription(
            chain.name,
            chain.ws_url.get_secret_value(),
            observer=self.metrics,
            max_message_bytes=min(chain.rpc_max_response_bytes, HEAD_MESSAGE_BYTES),
        )

    def _head_reader(
        self, parts: ChainParts, heads: HeadSubscription | None
    ) -> Callable[[], Awaitable[int]]:
        """Heads come through a stall watch; the first one read counts towards READY=1. The
        head read over HTTP is the subscription's watchdog (a quiet one reconnects)."""
        watch = HeadWatch(parts.reader, parts.settings.stall_after, observer=self.metrics)

        async def read_head() -> int:
            head = await watch.read()
            if heads is not None:
                heads.polled(head)
            self.health.stalled(parts.name, watch.stalled)
            self._started[parts.name].set()
            return head

        return read_head

    async def _tick(self, scanner: ChainScanner) -> bool:
        """One tick; True when caught up (so the loop waits a poll interval)."""
        if not scanner.prepared:
            await scanner.prepare()
        outcome = await scanner.tick()
        await scanner.count_open_payments()  # at most every few seconds
        self.health.ticked(scanner.name, outcome.head, outcome.cursor)
        self._started[scanner.name].set()
        return outcome.caught_up

    def _halt(self, scanner: ChainScanner, exc: ChainHalted) -> None:
        self._started[scanner.name].set()
        self.health.halted(scanner.name, str(exc))
        self.metrics.set_halted(scanner.name, True)
        log.error("chain_halted", reason=str(exc), error=type(exc).__name__)

    async def _sleep(self, seconds: float, heads: HeadSubscription | None = None) -> None:
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await (heads.arrival(self.stop) if heads is not None else self.stop.wait())

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second_signal_exiting_now", signal=sig.name)
            os._exit(EXIT_INTERRUPTED)
        log.info("signal_received", signal=sig.name)
        self.stop.set()


def _taken(exc: OSError) -> str:
    """What a taken port most often means: another scanner on this host (each instance needs
    its own port; a second one on SQLite would only stand by)."""
    if exc.errno != errno.EADDRINUSE:
        return ""
    return (
        " (another process listens there, often another `scanner run` on this host: each"
        " instance needs its own metrics port)"
    )


async def run(settings: Settings, environ: Mapping[str, str] | None = None) -> int:
    return await App(settings, environ).run()


async def deliver(settings: Settings) -> int:
    """``scanner deliver``: the delivery worker alone, ``scanner run``'s lifecycle with no chain
    to scan."""
    need_webhooks(settings)
    return await run(settings.model_copy(update={"chains": []}))
