"""Chain leases between instances (PostgreSQL), driven beat by beat in one process: spread to
ceil(C / I), handed over to a newcomer, taken over from a frozen holder once its lease expires,
and the fence of a writing transaction refuses an instance that no longer holds the chain."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from scanner.db import leases
from scanner.errors import ChainLockLost
from scanner.scan.leases import LeaseKeeper
from tests.conftest import BACKENDS

pytestmark = [
    pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True),
    pytest.mark.skipif("postgresql" not in BACKENDS, reason="leases are PostgreSQL's"),
]
CHAINS = ["c1", "c2", "c3", "c4", "c5"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def keeper(sessions: async_sessionmaker[AsyncSession], ttl: float = 30.0) -> LeaseKeeper:
    return LeaseKeeper(sessions, CHAINS, ttl, clock=Clock())


async def held_by(sessions: async_sessionmaker[AsyncSession]) -> Counter[str]:
    async with sessions() as session:
        return Counter(h.instance for h in (await leases.holders(session)).values())


async def test_chains_are_spread_and_handed_to_a_newcomer(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    a, b, c = (keeper(session_factory) for _ in range(3))
    await a.beat()
    assert await held_by(session_factory) == {a.instance: 5}  # alone: every chain
    await b.beat()  # two live: ceil(5/2) = 3, but nothing is free yet
    assert all(b.holds(name) is False for name in CHAINS)
    with capture_logs() as logs:
        await a.beat()  # hands two over
    assert [e["chain"] for e in logs if e["event"] == "chain_lease_released"] == ["c4", "c5"]
    await b.beat()
    assert sorted((await held_by(session_factory)).values()) == [2, 3]
    await c.beat()
    for k in (a, b, c, a, b, c):
        await k.beat()
    counts = await held_by(session_factory)
    assert sum(counts.values()) == 5 and max(counts.values()) <= 2  # ceil(5/3)
    held = [name for name in CHAINS if a.holds(name) or b.holds(name) or c.holds(name)]
    assert held == CHAINS  # each chain held by exactly one
    assert all(sum(k.holds(n) for k in (a, b, c)) == 1 for n in CHAINS)

    task = asyncio.create_task(c.run())  # a stopping instance hands everything over
    await asyncio.sleep(0.1)
    c.stop()
    await task
    async with session_factory() as session:
        gone = await session.execute(
            text("SELECT count(*) FROM scanner_instances WHERE id = :id"), {"id": c.instance}
        )
        assert gone.scalar_one() == 0
    for k in (a, b, a, b):
        await k.beat()
    assert sorted((await held_by(session_factory)).values()) == [2, 3]


async def test_a_frozen_holder_loses_its_chains_and_its_commits_are_fenced(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    frozen, other = keeper(session_factory, ttl=2.0), keeper(session_factory, ttl=2.0)
    await frozen.beat()
    await other.beat()
    await frozen.beat()
    await other.beat()
    mine = [n for n in CHAINS if frozen.holds(n)]
    assert len(mine) == 3
    lease = frozen.chain(mine[0])
    async with session_factory() as session, session.begin():
        await lease.fence(session)  # held: the transaction may write

    frozen._clock.now += 60  # type: ignore[attr-defined]  # it slept through its lease
    assert not await lease.acquire()  # its own view ran out first: it does not even try
    await asyncio.sleep(2.2)  # the server's clock: the leases and the instance row expire
    await other.beat()
    assert all(other.holds(n) for n in CHAINS)
    assert await held_by(session_factory) == {other.instance: 5}
    with pytest.raises(ChainLockLost, match="lease is gone"):
        async with session_factory() as session, session.begin():
            await lease.fence(session)  # a commit begun before the freeze writes nothing

    with capture_logs() as logs:
        await frozen.beat()  # it wakes: its leases are gone, it says so
    lost = sorted(e["chain"] for e in logs if e["event"] == "chain_lease_lost")
    assert lost == mine
    assert not any(frozen.holds(n) for n in CHAINS)


async def test_a_chain_is_held_elsewhere_only_while_another_live_instance_holds_it(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """What makes a chain loop a standby: not a claim this instance has not made yet, but a live
    lease of another instance."""
    a, b = keeper(session_factory), keeper(session_factory)
    assert not any(a.held_elsewhere(n) or b.held_elsewhere(n) for n in CHAINS)  # before a beat
    await a.beat()
    assert not any(a.held_elsewhere(n) for n in CHAINS)  # its own, all five
    await b.beat()  # two live: a holds all five, nothing free for b yet
    assert all(b.held_elsewhere(n) and not b.holds(n) for n in CHAINS)
    await a.beat()  # hands c4 and c5 over
    assert not a.held_elsewhere("c4")  # handed over: nobody's until b claims it
    await b.beat()  # claims them
    await a.beat()  # sees it
    assert [n for n in CHAINS if b.held_elsewhere(n)] == ["c1", "c2", "c3"]
    assert [n for n in CHAINS if a.held_elsewhere(n)] == ["c4", "c5"]
    async with session_factory() as session, session.begin():
        await leases.leave(session, b.instance)  # b is gone: its chains are nobody's
    await a.beat()
    assert not any(a.held_elsewhere(n) for n in CHAINS)
