"""``scanner deliver`` and ``scanner webhooks list | redeliver | test``.

Nothing printed here shows a webhook's secret or the parts of its URL that may carry
credentials: endpoints appear as their index and :func:`scanner.secrets.redact_url` of the URL.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping

from scanner.config import Settings
from scanner.db.engine import make_engine, make_session_factory
from scanner.db.migrate import ensure_schema
from scanner.deliver import store
from scanner.deliver.message import body, headers, iso_utc, payment_text
from scanner.deliver.sender import Sender
from scanner.deliver.worker import Endpoint, endpoints, utc_now
from scanner.errors import ConfigError, ScannerError
from scanner.secrets import Scrubber, printable, redact_url

COLUMNS = ("delivery_id", "endpoint", "event_id", "type", "status", "attempts", "last_status")


def need_webhooks(settings: Settings) -> list[Endpoint]:
    if not settings.webhooks:
        raise ConfigError("no [[webhooks]] configured", key="webhooks", file=settings.config_file)
    return endpoints(settings.webhooks)


async def webhooks(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "list":
        return await list_command(settings, args.status, args.limit, as_json=args.json)
    if args.action == "redeliver":
        return await redeliver_command(settings, args.delivery_id)
    return await test_command(settings, args.endpoint, as_json=args.json)


def _moment(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _row(delivery: RowMapping, by_key: dict[str, Endpoint], scrub: Scrubber) -> dict[str, Any]:
    endpoint = by_key.get(delivery["endpoint_key"])
    error = delivery["last_error"]
    return {
        "delivery_id": str(delivery["id"]),
        "endpoint": endpoint.index if endpoint else None,
        "url": redact_url(endpoint.url) if endpoint else None,
        "event_id": delivery["event_id"],
        "payment_id": payment_text(delivery["payment_id"]),
        "type": delivery["type"],
        "status": delivery["status"],
        "attempts": delivery["attempts"],
        "last_status": delivery["last_status"],
        "last_error": scrub.text(error) if error else None,
        "next_attempt_at": _moment(delivery["next_attempt_at"]),
        "delivered_at": _moment(delivery["delivered_at"]),
        "redelivery": delivery["redelivery"],
        "created_at": _moment(delivery["created_at"]),
    }


async def list_command(settings: Settings, status: str | None, limit: int, *, as_json: bool) -> int:
    by_key = {e.key: e for e in endpoints(settings.webhooks)}
    engine = make_engine(settings)
    try:
        async with make_session_factory(engine)() as session:
            found = await store.list_deliveries(session, status, limit)
    finally:
        await engine.dispose()
    rows = [_row(d, by_key, Scrubber(settings.secrets())) for d in found]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    headers_ = [*COLUMNS, "last_error"]
    table = [headers_] + [["-" if r[h] is None else str(r[h]) for h in headers_] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers_))]
    for line in table:
        print(printable("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()))
    return 0


async def redeliver_command(settings: Settings, delivery_id: str) -> int:
    try:
        old = uuid.UUID(delivery_id)
    except ValueError:
        raise ConfigError(f"not a delivery id: {delivery_id!r}", key="DELIVERY_ID") from None
    await ensure_schema(settings)
    engine = make_engine(settings)
    try:
        async with make_session_factory(engine)() as session, session.begin():
            new = await store.redeliver(session, old, utc_now())
    finally:
        await engine.dispose()
    if new is None:
        raise ScannerError(f"no webhook delivery {old}")
    print(json.dumps({"delivery_id": str(new), "redelivery_of": str(old)}))
    return 0


def test_payload(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "id": 0,
        "event_key": str(uuid.uuid4()),  # a test is never the same fact twice
        "type": "test",
        "chain": None,
        "payment_id": None,
        "status_from": None,
        "status_to": None,
        "amount": None,
        "amount_received": None,
        "confirmations": None,
        "tx_hash": None,
        "log_index": None,
        "data": {"endpoint": endpoint.index},
        "created_at": iso_utc(utc_now()),
    }


async def test_command(settings: Settings, index: int, *, as_json: bool = False) -> int:
    """One signed test event to endpoint ``index``, sent now (not stored); exit 1 unless 2xx."""
    configured = need_webhooks(settings)
    if not 0 <= index < len(configured):
        raise ConfigError(
            f"--endpoint {index}: [[webhooks]] has {len(configured)} endpoint(s), from 0",
            key="webhooks",
            file=settings.config_file,
        )
    endpoint = configured[index]
    delivery_id = uuid.uuid4()
    stored = test_payload(endpoint)
    raw = body(stored, delivery_id, 1, False)
    sent = headers(endpoint.secret, int(time.time()), raw, stored, delivery_id)
    sender = Sender()
    try:
        outcome = await sender.post(endpoint.url, raw, sent, endpoint.settings.timeout, utc_now())
    finally:
        await sender.aclose()
    result = {
        "endpoint": index,
        "url": redact_url(endpoint.url),
        "delivery_id": str(delivery_id),
        "outcome": outcome.label,
        "http_status": outcome.status,
        "error": Scrubber(settings.secrets()).text(outcome.error) if outcome.error else None,
        "seconds": round(outcome.seconds, 3),
    }
    print(json.dumps(result) if as_json else _test_sentence(result), file=sys.stdout)
    return 0 if outcome.delivered else 1


def _test_sentence(result: dict[str, Any]) -> str:
    where = f"endpoint {result['endpoint']} ({result['url']})"
    took = f"in {result['seconds']} s"
    if result["outcome"] == "delivered":
        return f"{where} accepted the signed test event (HTTP {result['http_status']}) {took}"
    return f"{where} did not accept the test event: {result['error'] or result['outcome']} {took}"
