"""``payment_events``: the outbox. Written in the same transaction as the change it records.

``id`` autoincrements on both databases and is never reused (SQLite ``AUTOINCREMENT``), so a
gateway can read events in id order; on PostgreSQL writers serialize event inserts with
:func:`scanner.db.locks.events_xact_lock` so ids become visible in commit order. A database that
fails over to a standby without its newest commits may hand out an id again, for another event:
``event_key`` (unique; see :func:`scanner.core.events.event_key`) is what names an event for
good, and what a receiver deduplicates by.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from scanner.db.models.base import Base
from scanner.db.types import UTCDateTime, UUIDType, utcnow

EVENT_ID = BigInteger().with_variant(Integer(), "sqlite")
EVENT_DATA = JSON().with_variant(JSONB(), "postgresql")


class PaymentEvent(Base):
    __tablename__ = "payment_events"
    __table_args__ = (
        Index("ix_payment_events_payment_id", "payment_id"),
        Index("uq_payment_events_event_key", "event_key", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(EVENT_ID, primary_key=True, autoincrement=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(UUIDType(), ForeignKey("payments.id"))
    type: Mapped[str] = mapped_column(String(32))
    status_from: Mapped[str | None] = mapped_column(String(16))
    status_to: Mapped[str | None] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(EVENT_DATA, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=utcnow())
    event_key: Mapped[str | None] = mapped_column(String(36))
