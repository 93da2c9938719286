"""``webhook_deliveries`` and ``webhook_cursors``: durable webhook deliveries from the outbox.

One delivery row per (endpoint, event) (plus one per operator redelivery), with its state:
``pending`` until a 2xx (``delivered``) or ``max_attempts`` (``failed``). ``endpoint_key``
identifies the configured URL (a hash of it, so reordering ``[[webhooks]]`` moves nothing);
``endpoint`` is its index in the configuration when the row was made. A claim sets
``claimed_by`` and ``lease_until``; a process killed mid-delivery leaves a lease that expires.

``webhook_cursors`` holds, per endpoint, the newest outbox id already turned into deliveries.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column

from scanner.db.models.base import Base
from scanner.db.models.payment_events import EVENT_DATA, EVENT_ID
from scanner.db.types import UTCDateTime, UUIDType, utcnow


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(UUIDType(), primary_key=True)
    endpoint: Mapped[int] = mapped_column(Integer)
    endpoint_key: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[int] = mapped_column(EVENT_ID)
    payment_id: Mapped[uuid.UUID] = mapped_column(UUIDType())
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(EVENT_DATA)
    redelivery: Mapped[bool] = mapped_column(Boolean, server_default=false())
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(36))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    event_created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=utcnow())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=utcnow(), onupdate=utcnow()
    )


_FIRST = text("redelivery = false")
_PENDING = text("status = 'pending'")
# One first delivery per endpoint and event, whichever instance fans the event out.
Index(
    "uq_webhook_deliveries_endpoint_event",
    WebhookDelivery.endpoint_key,
    WebhookDelivery.event_id,
    unique=True,
    postgresql_where=_FIRST,
    sqlite_where=_FIRST,
)
# What is due, and what an earlier event of the same payment still holds back.
Index(
    "ix_webhook_deliveries_pending",
    WebhookDelivery.endpoint_key,
    WebhookDelivery.payment_id,
    WebhookDelivery.event_id,
    postgresql_where=_PENDING,
    sqlite_where=_PENDING,
)
Index(
    "ix_webhook_deliveries_due",
    WebhookDelivery.next_attempt_at,
    postgresql_where=_PENDING,
    sqlite_where=_PENDING,
)
Index("ix_webhook_deliveries_status_created", WebhookDelivery.status, WebhookDelivery.created_at)


class WebhookCursor(Base):
    __tablename__ = "webhook_cursors"

    endpoint_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=utcnow(), onupdate=utcnow()
    )
