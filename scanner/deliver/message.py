"""Pure parts of a delivery: what is sent, how it is signed, when it is tried again.

The signature header is ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.
A receiver recomputes it over the raw bytes it received and rejects an old ``t``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID

from scanner.core.amounts import within_span
from scanner.db.types import canonical_decimal, to_decimal

SIGNATURE_HEADER = "X-Scanner-Signature"
EVENT_ID_HEADER = "X-Scanner-Event-Id"
EVENT_KEY_HEADER = "X-Scanner-Event-Key"
DELIVERY_ID_HEADER = "X-Scanner-Delivery-Id"
JITTER = 0.2  # each delay is scaled by a random factor in [1 - JITTER, 1 + JITTER]


def endpoint_key(url: str) -> str:
    """A stable name for a configured URL that shows nothing of it (32 hex digits)."""
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def amount_text(raw: str | None) -> str | None:
    """A stored amount as a plain decimal string (``25.5``); what a gateway wrote that is not a
    number, or whose plain form would be huge (``1E+999999999``: a gigabyte of zeros), passes as
    written (an ``invalid_payment``'s): it must not stop the deliveries."""
    if raw is None:
        return None
    try:
        number = to_decimal(raw)
    except (ValueError, TypeError):
        return raw
    return canonical_decimal(number) if within_span(number) else raw


def payment_text(stored: str) -> str:
    """A stored payment id as the payload names it: a uuid in its standard form; an id that is
    no uuid (SQLite takes any text, and its ``invalid_payment`` is written under it) as stored."""
    try:
        return str(UUID(stored))
    except ValueError:
        return stored


def iso_utc(moment: datetime) -> str:
    """``2026-01-01T10:00:00.000000Z``: the payload's form of a time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class EventFacts:
    """One outbox row with the payment it belongs to (``chain`` etc. None if it is gone)."""

    id: int
    key: str | None  # None: an event written before keys existed (see legacy_key)
    payment_id: str  # as stored (text), see payment_text
    type: str
    status_from: str | None
    status_to: str | None
    data: Mapping[str, Any]
    created_at: datetime
    chain: str | None
    amount: str | None  # as stored (text), see amount_text
    amount_received: str | None
    confirmations: int | None


def payload(event: EventFacts) -> dict[str, Any]:
    """The stored part of the body: every field the event has; amounts as decimal strings.

    ``amount_received`` is the one the event recorded (a status change) or else the payment's
    when the delivery was queued.
    """
    data = dict(event.data)
    received = data.get("amount_received_decimal", amount_text(event.amount_received))
    return {
        "id": event.id,
        "event_key": event.key or legacy_key(event.id),
        "type": event.type,
        "chain": event.chain,
        "payment_id": payment_text(event.payment_id),
        "status_from": event.status_from,
        "status_to": event.status_to,
        "amount": amount_text(event.amount),
        "amount_received": received,
        "confirmations": event.confirmations,
        "tx_hash": data.get("tx_hash"),
        "log_index": data.get("log_index"),
        "data": data,
        "created_at": iso_utc(event.created_at),
    }


def legacy_key(event_id: int) -> str:
    """The key of an event written before keys existed (what the migration gave it)."""
    return f"00000000-0000-0000-0000-{event_id:012x}"


def body(stored: Mapping[str, Any], delivery_id: UUID, attempt: int, redelivery: bool) -> bytes:
    """The raw bytes POSTed (the signature covers exactly these)."""
    document = {
        **stored,
        "delivery_id": str(delivery_id),
        "attempt": attempt,
        "redelivery": redelivery,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: str, timestamp: int, raw: bytes) -> str:
    """The ``X-Scanner-Signature`` value for ``raw`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, raw: bytes, now: float, tolerance: float = 300.0) -> bool:
    """What a receiver does: the header's MAC over ``raw`` matches and ``t`` is recent."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, timestamp, raw)
    return hmac.compare_digest(expected, header) and abs(now - timestamp) <= tolerance


def headers(
    secret: str, timestamp: int, raw: bytes, stored: Mapping[str, Any], delivery_id: UUID
) -> dict[str, str]:
    """``stored``: the event's payload; its key is the receiver's deduplication key."""
    event_id = int(stored["id"])
    return {
        "Content-Type": "application/json",
        "User-Agent": "ctrip-scanner-webhooks",
        SIGNATURE_HEADER: signature(secret, timestamp, raw),
        EVENT_ID_HEADER: str(event_id),
        EVENT_KEY_HEADER: str(stored.get("event_key") or legacy_key(event_id)),
        DELIVERY_ID_HEADER: str(delivery_id),
    }


def backoff(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): ``base · 2^(n-1)``,
    at most ``cap``, scaled by ±20 % jitter (never above ``cap``)."""
    plain = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return min(cap, plain * (1.0 - JITTER + 2.0 * JITTER * rand()))


def schedule(max_attempts: int, base: float, cap: float) -> list[float]:
    """The delays between attempts without jitter (for the documentation and tests)."""
    return [backoff(n, base, cap, lambda: 0.5) for n in range(1, max_attempts)]


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if unusable.

    Whatever a receiver sends, this returns: delta-seconds are ASCII digits only (``"²"`` is a
    digit to ``str.isdigit`` and no number to ``float``), and a date that cannot be read is None.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdecimal():
        return float(value)  # inf beyond a float's range: the ceiling applies
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
