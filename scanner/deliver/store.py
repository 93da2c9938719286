"""Every statement of the delivery worker and the ``webhooks`` commands.

Functions run inside the caller's transaction and never commit. Times are passed in (the
worker's clock), never taken from the database's ``now()``, so tests control them. On
PostgreSQL, cursors and due deliveries are locked ``FOR UPDATE SKIP LOCKED``: several instances
fan out and deliver together, each row handled by one of them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Table, Text, and_, cast, exists, false, func, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.db.models import Payment, PaymentEvent, WebhookCursor, WebhookDelivery
from scanner.db.types import StoredKey
from scanner.deliver.message import EventFacts, payload

FANOUT_PAGE = 500


@dataclass(frozen=True)
class Route:
    """What fan-out needs of one configured endpoint."""

    index: int
    key: str
    events: frozenset[str]
    chains: frozenset[str] | None  # None: every chain

    def wants(self, facts: EventFacts) -> bool:
        if facts.type not in self.events:
            return False
        return self.chains is None or facts.chain in self.chains


@dataclass(frozen=True)
class Claimed:
    """A delivery this process holds under a lease, about to be attempted."""

    id: UUID
    endpoint_key: str
    event_id: int
    payload: Mapping[str, Any]
    redelivery: bool
    attempt: int


def _table() -> Table:
    return WebhookDelivery.__table__  # type: ignore[return-value]


def _postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _insert(session: AsyncSession, model: Any) -> Any:
    dialect = postgresql if _postgres(session) else sqlite
    return dialect.insert(model)


async def ensure_cursors(session: AsyncSession, keys: Sequence[str]) -> None:
    """A cursor for each endpoint not seen before, at the newest event: a newly configured
    endpoint receives the events written from then on."""
    newest = (await session.execute(select(func.max(PaymentEvent.id)))).scalar()
    rows = [{"endpoint_key": k, "last_event_id": int(newest or 0)} for k in keys]
    if rows:
        await session.execute(_insert(session, WebhookCursor).on_conflict_do_nothing(), rows)


async def _lock_cursors(session: AsyncSession, keys: Sequence[str]) -> dict[str, int]:
    stmt = select(WebhookCursor.endpoint_key, WebhookCursor.last_event_id).where(
        WebhookCursor.endpoint_key.in_(keys)
    )
    if _postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    return {k: int(v) for k, v in (await session.execute(stmt)).all()}


async def _events_after(session: AsyncSession, low: int, limit: int) -> list[EventFacts]:
    e, p = PaymentEvent, Payment
    stmt = (
        select(
            e.id,
            e.event_key,
            cast(e.payment_id, Text),  # as stored: on SQLite any text (an invalid_payment's)
            e.type,
            e.status_from,
            e.status_to,
            e.data,
            e.created_at,
            p.chain,
            cast(p.amount, Text),  # as written: a gateway's bad value must not stop deliveries
            cast(p.amount_received, Text),
            p.confirmations,
        )
        .outerjoin(p, p.id == e.payment_id)
        .where(e.id > low)
        .order_by(e.id)
        .limit(limit)
    )
    return [EventFacts(*row) for row in (await session.execute(stmt)).all()]


async def fan_out(
    session: AsyncSession, routes: Sequence[Route], now: datetime, limit: int = FANOUT_PAGE
) -> int:
    """Turn the next outbox events into pending deliveries; the number of events read (a full
    page means: call again). Events are read in id order from each endpoint's cursor.

    An endpoint whose cursor the database does not have (a failover to a standby that never got
    it) gets one again, at the newest event, as a newly configured endpoint does: that this
    process made one before is never taken for the database's word."""
    keys = [r.key for r in routes]
    cursors = await _lock_cursors(session, keys)
    if missing := [k for k in keys if k not in cursors]:  # or held by another instance
        await ensure_cursors(session, missing)  # (a held one is kept, and not waited for)
        cursors.update(await _lock_cursors(session, missing))
    if not cursors:
        return 0
    events = await _events_after(session, min(cursors.values()), limit)
    if not events:
        return 0
    rows: list[dict[str, Any]] = []
    for route in routes:
        if route.key not in cursors:
            continue  # another instance holds it
        for facts in events:
            if facts.id > cursors[route.key] and route.wants(facts):
                rows.append(_new_row(route, facts, now))
    if rows:
        await session.execute(_insert(session, WebhookDelivery).on_conflict_do_nothing(), rows)
    top = events[-1].id
    await session.execute(
        update(WebhookCursor)
        .where(WebhookCursor.endpoint_key.in_(list(cursors)), WebhookCursor.last_event_id < top)
        .values(last_event_id=top, updated_at=now)
    )
    return len(events)


def _new_row(route: Route, facts: EventFacts, now: datetime) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "endpoint": route.index,
        "endpoint_key": route.key,
        "event_id": facts.id,
        "payment_id": _bound_id(facts.payment_id),
        "type": facts.type,
        "payload": payload(facts),
        "redelivery": False,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "event_created_at": facts.created_at,
        "created_at": now,
        "updated_at": now,
    }


def _bound_id(stored: str) -> Any:
    """A payment id to bind: a uuid in its one form, or an id that is no uuid as it is stored
    (only SQLite holds those: it takes any text as a gateway's id)."""
    try:
        return uuid.UUID(stored)
    except ValueError:
        return StoredKey(stored)


def _readable() -> list[Any]:
    """Every delivery column, the payment id as stored text (it may be no uuid)."""
    d = _table()
    return [cast(c, Text).label(c.name) if c.name == "payment_id" else c for c in d.c]


def _in_turn(keys: Sequence[str]) -> Any:
    """Pending, and no earlier event of the same payment still pending for the endpoint
    (redeliveries neither wait nor hold back)."""
    d = _table()
    earlier = d.alias("earlier")
    held_back = exists().where(
        earlier.c.endpoint_key == d.c.endpoint_key,
        earlier.c.payment_id == d.c.payment_id,
        earlier.c.status == "pending",
        earlier.c.redelivery == false(),
        earlier.c.event_id < d.c.event_id,
    )
    return and_(
        d.c.status == "pending",
        d.c.endpoint_key.in_(keys),
        or_(d.c.redelivery == true(), ~held_back),
    )


def _unleased(now: datetime) -> Any:
    d = _table()
    return or_(d.c.lease_until.is_(None), d.c.lease_until <= now)


def _due(keys: Sequence[str], now: datetime) -> Any:
    return and_(_in_turn(keys), _table().c.next_attempt_at <= now, _unleased(now))


async def _lease(
    session: AsyncSession, ids: Sequence[Any], now: datetime, *, owner: str, lease: float
) -> None:
    """The deliveries ``ids`` held by ``owner`` for ``lease`` seconds, their attempt counted."""
    d = _table()
    await session.execute(
        update(d)
        .where(d.c.id.in_(ids))
        .values(
            claimed_by=owner,
            lease_until=now + timedelta(seconds=lease),
            attempts=d.c.attempts + 1,
            updated_at=now,
        )
    )


async def claim(
    session: AsyncSession,
    keys: Sequence[str],
    now: datetime,
    *,
    owner: str,
    lease: float,
    limit: int,
) -> list[Claimed]:
    """Take up to ``limit`` due deliveries under a lease (counting the attempt now: a process
    killed mid-delivery has used it). At most one per endpoint and payment is ever in flight."""
    d = _table()
    stmt = (
        select(*_readable())
        .where(_due(keys, now))
        .order_by(d.c.event_id, d.c.created_at)
        .limit(limit)
    )
    if _postgres(session):
        stmt = stmt.with_for_update(skip_locked=True, of=d)
    rows = (await session.execute(stmt)).mappings().all()
    if not rows:
        return []
    await _lease(session, [row["id"] for row in rows], now, owner=owner, lease=lease)
    return [
        Claimed(
            r["id"],
            r["endpoint_key"],
            int(r["event_id"]),
            r["payload"],
            r["redelivery"],
            int(r["attempts"]) + 1,
        )
        for r in rows
    ]


async def record(
    session: AsyncSession, delivery_id: UUID, owner: str, values: Mapping[str, Any]
) -> bool:
    """Store an attempt's result, if this process still holds the lease; False if it lost it."""
    d = _table()
    result = await session.execute(
        update(d)
        .where(d.c.id == delivery_id, d.c.claimed_by == owner)
        .values(claimed_by=None, lease_until=None, **values)
    )
    return bool(getattr(result, "rowcount", 0))


async def next_due(session: AsyncSession, keys: Sequence[str], now: datetime) -> datetime | None:
    """When the next delivery may be claimed: the earliest retry time of those in turn, or
    the end of a lease held by another process. None: nothing will be due without a new event
    or another process finishing one (a NOTIFY or the poll covers those)."""
    d = _table()
    free = select(func.min(d.c.next_attempt_at)).where(_in_turn(keys), _unleased(now))
    leased = select(func.min(d.c.lease_until)).where(
        d.c.status == "pending", d.c.endpoint_key.in_(keys), d.c.lease_until > now
    )
    times = [(await session.execute(q)).scalar() for q in (free, leased)]
    found: list[datetime] = [t for t in times if t is not None]
    return min(found) if found else None


async def backlog(
    session: AsyncSession, keys: Sequence[str]
) -> dict[str, tuple[int, datetime | None]]:
    """Per endpoint: pending deliveries and the creation time of the oldest one's event."""
    d = _table()
    stmt = (
        select(d.c.endpoint_key, func.count(), func.min(d.c.event_created_at))
        .where(d.c.status == "pending", d.c.endpoint_key.in_(keys))
        .group_by(d.c.endpoint_key)
    )
    return {k: (int(n), oldest) for k, n, oldest in (await session.execute(stmt)).all()}


async def list_deliveries(
    session: AsyncSession, status: str | None, limit: int
) -> Sequence[RowMapping]:
    """The newest deliveries first, optionally of one status (columns by name)."""
    d = _table()
    stmt = select(*_readable()).order_by(d.c.created_at.desc(), d.c.event_id.desc())
    if status is not None:
        stmt = stmt.where(d.c.status == status)
    return (await session.execute(stmt.limit(limit))).mappings().all()


async def redeliver(session: AsyncSession, delivery_id: UUID, now: datetime) -> UUID | None:
    """A new pending delivery of the same event to the same endpoint, marked ``redelivery``;
    None when there is no such delivery."""
    d = _table()
    stmt = select(*_readable()).where(d.c.id == delivery_id)
    old = (await session.execute(stmt)).mappings().first()
    if old is None:
        return None
    new_id = uuid.uuid4()
    kept = ("endpoint", "endpoint_key", "event_id", "type", "payload", "event_created_at")
    row = {
        **{name: old[name] for name in kept},
        "id": new_id,
        "payment_id": _bound_id(old["payment_id"]),
        "redelivery": True,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }
    await session.execute(_insert(session, WebhookDelivery), [row])
    return new_id
