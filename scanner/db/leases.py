"""Instances and chain leases on PostgreSQL: the queries, each one statement.

Every time is the server's ``clock_timestamp()``: a lease is valid while its expiry is ahead of
the database's clock, whatever the hosts' clocks say. The rules that use these queries (how many
chains to hold, when to hand one over) live in :mod:`scanner.scan.leases`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.db.types import parse_timestamp

_NOW = "clock_timestamp()"
_LATER = "clock_timestamp() + make_interval(secs => :ttl)"


@dataclass(frozen=True, slots=True)
class Holder:
    instance: str
    host: str
    pid: int
    lease_expires_at: datetime

    def as_json(self) -> dict[str, object]:
        return {
            "instance": self.instance,
            "host": self.host,
            "pid": self.pid,
            "lease_expires_at": self.lease_expires_at.isoformat(),
        }


async def heartbeat(session: AsyncSession, instance: str, host: str, pid: int, ttl: float) -> int:
    """Register or renew this instance; the number of live instances (this one included)."""
    await session.execute(
        text(
            "INSERT INTO scanner_instances (id, host, pid, heartbeat_at, expires_at)"
            f" VALUES (:id, :host, :pid, {_NOW}, {_LATER})"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at,"
            " expires_at = EXCLUDED.expires_at"
        ),
        {"id": instance, "host": host, "pid": pid, "ttl": ttl},
    )
    await session.execute(  # instances dead for a while: their rows only clutter the view
        text(f"DELETE FROM scanner_instances WHERE expires_at < {_NOW} - interval '1 hour'")
    )
    live = await session.execute(
        text(f"SELECT count(*) FROM scanner_instances WHERE expires_at > {_NOW}")
    )
    return int(live.scalar_one())


async def renew(
    session: AsyncSession, instance: str, chains: Sequence[str], ttl: float
) -> set[str]:
    """Extend this instance's unexpired leases; the chains still held (an expired lease is
    lost: another instance may have taken it, and it is claimed again like any free chain)."""
    if not chains:
        return set()
    rows = await session.execute(
        text(
            f"UPDATE chain_leases SET lease_expires_at = {_LATER}"
            " WHERE instance_id = :id AND chain = ANY(:chains)"
            f" AND lease_expires_at > {_NOW} RETURNING chain"
        ),
        {"id": instance, "chains": list(chains), "ttl": ttl},
    )
    return {str(r[0]) for r in rows}


async def claim(session: AsyncSession, instance: str, chain: str, ttl: float) -> bool:
    """Take the chain's lease if nobody holds it (no row, handed over, or expired)."""
    rows = await session.execute(
        text(
            "INSERT INTO chain_leases (chain, instance_id, lease_expires_at, acquired_at)"
            f" VALUES (:chain, :id, {_LATER}, {_NOW})"
            " ON CONFLICT (chain) DO UPDATE SET instance_id = EXCLUDED.instance_id,"
            " lease_expires_at = EXCLUDED.lease_expires_at, acquired_at = EXCLUDED.acquired_at"
            " WHERE chain_leases.instance_id IS NULL"
            f" OR chain_leases.lease_expires_at <= {_NOW}"
            " RETURNING chain"
        ),
        {"chain": chain, "id": instance, "ttl": ttl},
    )
    return rows.first() is not None


async def release(session: AsyncSession, instance: str, chains: Sequence[str]) -> None:
    """Hand the chains over: free at once for another instance to claim."""
    if chains:
        await session.execute(
            text(
                f"UPDATE chain_leases SET instance_id = NULL, lease_expires_at = {_NOW}"
                " WHERE instance_id = :id AND chain = ANY(:chains)"
            ),
            {"id": instance, "chains": list(chains)},
        )


async def leave(session: AsyncSession, instance: str) -> None:
    """The instance stops: every lease handed over, its row gone."""
    await session.execute(
        text(
            f"UPDATE chain_leases SET instance_id = NULL, lease_expires_at = {_NOW}"
            " WHERE instance_id = :id"
        ),
        {"id": instance},
    )
    await session.execute(text("DELETE FROM scanner_instances WHERE id = :id"), {"id": instance})


async def holds(session: AsyncSession, instance: str, chain: str) -> str | None:
    """``None`` when ``instance`` holds an unexpired lease on ``chain``; else who does (or
    ``'nobody'``): the fencing check of a writing transaction."""
    row = (
        await session.execute(
            text(
                f"SELECT instance_id, lease_expires_at > {_NOW} FROM chain_leases"
                " WHERE chain = :chain"
            ),
            {"chain": chain},
        )
    ).first()
    if row is None or row[0] is None:
        return "nobody"
    if row[0] != instance:
        return str(row[0])
    return None if row[1] else "nobody (the lease expired)"


async def holders(session: AsyncSession) -> dict[str, Holder]:
    """Each chain held by a live instance under an unexpired lease."""
    if session.get_bind().dialect.name != "postgresql":
        return {}
    rows = await session.execute(
        text(
            "SELECT l.chain, i.id, i.host, i.pid, l.lease_expires_at"
            " FROM chain_leases l JOIN scanner_instances i ON i.id = l.instance_id"
            f" WHERE l.lease_expires_at > {_NOW} AND i.expires_at > {_NOW}"
        )
    )
    return {
        str(chain): Holder(str(iid), str(host), int(pid), parse_timestamp(expires))
        for chain, iid, host, pid, expires in rows
    }
