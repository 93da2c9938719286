"""Several ``scanner run`` share the chains on PostgreSQL, under leases.

    instance row (heartbeat) ─▶ renew own leases ─▶ hand over the excess ─▶ claim free chains

Every ``ttl / 4`` seconds the :class:`LeaseKeeper` renews this instance's row and its leases
(``ttl`` seconds ahead, by the database's clock). With C chains and I live instances it holds at
most ceil(C / I): an instance that holds more hands the excess over (a newcomer takes it within a
beat), one that holds fewer claims chains nobody holds (never started, handed over, or whose
lease expired: a holder killed or frozen). A stopping instance hands every chain over.

The keeper only decides who scans; what keeps two holders from writing twice is the fence,
:meth:`ChainLease.fence`, run in every writing transaction of the chain under its transaction
lock (and once more at the end of a range's transaction): the lease must be this instance's and
unexpired by the server's clock, and the range's commit also checks that the cursor is where the
range began. A frozen holder that wakes finds its lease gone (its local
validity ran out too, so it does not even try) and writes nothing. A transaction it froze in
is ended by the server after ``idle_in_transaction_session_timeout`` (2 leases, at least 15 s: see
:attr:`ChainLease.idle_seconds`, set before the chain's transaction lock is taken), so that it
does not hold that lock against the new holder for longer, wherever in the transaction it froze.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import socket
import time
from collections.abc import Callable
from contextlib import suppress
from uuid import uuid4

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scanner.db import leases
from scanner.errors import ChainLockLost, ScannerError
from scanner.observe.metrics import Metrics, NullMetrics

log = structlog.get_logger(__name__)
BEATS_PER_LEASE = 4
SAFETY = 0.8  # the local view of a lease ends at this share of its length (clock drift, latency)
# A chain transaction idle this long (its process frozen inside it) is ended by the server:
# long enough for the plan of a large range, computed between the transaction's statements.
IDLE_LEASES, MIN_IDLE_SECONDS = 2, 15.0


class LeaseKeeper:
    """This instance's registration and chain leases, renewed by :meth:`run`."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        chains: list[str],
        ttl: float,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self.metrics = metrics or NullMetrics()
        self.instance = str(uuid4())
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._clock = clock
        self._held: set[str] = set()
        self._elsewhere: set[str] = set()  # chains another live instance held at the last beat
        self._valid_until = 0.0
        self._done = asyncio.Event()
        self.first_beat = asyncio.Event()  # set once the first round of claims has been tried
        offset = int(hashlib.sha256(self.instance.encode()).hexdigest(), 16) % max(len(chains), 1)
        ordered = sorted(chains)
        self.chains = ordered[offset:] + ordered[:offset]  # instances try chains in other orders

    def holds(self, chain: str) -> bool:
        """Whether this instance may scan the chain now (its last renewal is recent enough)."""
        return chain in self._held and self._clock() < self._valid_until

    def held_elsewhere(self, chain: str) -> bool:
        """Whether another live instance held the chain at the last heartbeat (before the
        first one, nobody is known to: the chain is not this instance's yet, nor a standby's)."""
        return chain in self._elsewhere

    def drop(self, chain: str) -> bool:
        """The fence found the chain gone: forget it. True when it was thought held."""
        held = chain in self._held
        self._held.discard(chain)
        return held

    def chain(self, name: str) -> ChainLease:
        return ChainLease(self, name)

    async def run(self) -> None:
        """Beat until :meth:`stop`, then hand every chain over."""
        log.info("instance_started", instance=self.instance, host=self.host, pid=self.pid)
        try:
            while not self._done.is_set():
                try:
                    await self.beat()
                except ScannerError as exc:
                    log.error("lease_heartbeat_failed", error=type(exc).__name__, message=str(exc))
                self.first_beat.set()
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._done.wait(), self.ttl / BEATS_PER_LEASE)
        finally:
            await self._leave()

    def stop(self) -> None:
        self._done.set()

    async def beat(self) -> None:
        started = self._clock()
        async with self.sessions() as session, session.begin():
            live = await leases.heartbeat(session, self.instance, self.host, self.pid, self.ttl)
            kept = await leases.renew(session, self.instance, sorted(self._held), self.ttl)
            target = math.ceil(len(self.chains) / max(live, 1))
            excess = sorted(kept)[target:]
            await leases.release(session, self.instance, excess)
        for chain in sorted(self._held - kept):
            self._lost(chain, "the lease expired before it was renewed")
        for chain in excess:
            log.info("chain_lease_released", chain=chain, reason="spread", instances=live)
        self._held = kept - set(excess)
        self._valid_until = started + self.ttl * SAFETY
        for chain in self.chains:
            if len(self._held) >= target:
                break
            if chain not in self._held and await self._claim(chain):
                self._held.add(chain)
                log.info("chain_lease_acquired", chain=chain, instance=self.instance)
        await self._look_around()

    async def _look_around(self) -> None:
        """Which chains other live instances hold now (this instance waits for those as a
        standby; a chain nobody holds is one it is about to claim, or a gap, not a standby)."""
        async with self.sessions() as session:
            held = await leases.holders(session)
        self._elsewhere = {c for c, h in held.items() if h.instance != self.instance}

    async def _claim(self, chain: str) -> bool:
        async with self.sessions() as session, session.begin():
            return await leases.claim(session, self.instance, chain, self.ttl)

    def _lost(self, chain: str, reason: str) -> None:
        log.error("chain_lease_lost", chain=chain, reason=reason)
        self.metrics.chain_lock_lost(chain)

    async def _leave(self) -> None:
        held, self._held = sorted(self._held), set()
        try:
            async with self.sessions() as session, session.begin():
                await leases.leave(session, self.instance)
        except ScannerError as exc:  # the leases expire on their own
            log.warning("instance_leave_failed", error=type(exc).__name__, message=str(exc))
            return
        for chain in held:
            log.info("chain_lease_released", chain=chain, reason="stopping")
        log.info("instance_stopped", instance=self.instance)


class ChainLease:
    """One chain's view of the keeper, with the interface of
    :class:`~scanner.scan.writer.ChainWriterLock` (acquire, fence, lost, release)."""

    def __init__(self, keeper: LeaseKeeper, chain: str) -> None:
        self.keeper = keeper
        self.chain = chain
        self._was_held = False
        self._elsewhere_logged = False

    async def acquire(self) -> bool:
        if not self.keeper.first_beat.is_set():  # a fresh instance claims before it judges
            with suppress(TimeoutError):
                await asyncio.wait_for(self.keeper.first_beat.wait(), self.keeper.ttl)
        held = self.keeper.holds(self.chain)
        if held and not self._was_held:
            self._elsewhere_logged = False
        elif not held and not self._elsewhere_logged and self.held_elsewhere():
            self._elsewhere_logged = True
            log.info("chain_held_elsewhere", chain=self.chain)
        self._was_held = held
        return held

    async def fence(self, session: AsyncSession) -> None:
        """Inside a writing transaction: raise ChainLockLost unless this instance holds an
        unexpired lease on the chain (by the server's clock)."""
        other = await leases.holds(session, self.keeper.instance, self.chain)
        if other is not None:
            raise ChainLockLost(
                f"chain {self.chain!r}: this instance's lease is gone (held by {other}):"
                " nothing written",
                chain=self.chain,
            )

    @property
    def idle_seconds(self) -> float:
        """How long a transaction of the chain may wait for this process (frozen inside it)
        before the server ends it, releasing the chain's transaction lock to the new holder."""
        return max(IDLE_LEASES * self.keeper.ttl, MIN_IDLE_SECONDS)

    def held_elsewhere(self) -> bool:
        """After a refused :meth:`acquire`: another live instance holds the chain."""
        return self.keeper.held_elsewhere(self.chain)

    async def lost(self, reason: str) -> None:
        if self.keeper.drop(self.chain):
            self.keeper._lost(self.chain, reason)
        self._was_held = False

    async def release(self) -> None:
        """Nothing per chain: the keeper hands every chain over when it stops."""
