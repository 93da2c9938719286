"""The delivery worker against a real receiver, on both databases: what is sent and signed,
retries through every kind of failure, per-payment order, leases, several instances."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import structlog
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.config import Settings
from scanner.core.amounts import to_base_units
from scanner.core.plan import invalid_outbox
from scanner.db import events as outbox
from scanner.db.engine import make_engine, make_session_factory
from scanner.db.types import StoredKey
from scanner.deliver import store
from scanner.deliver.commands import list_command
from scanner.deliver.worker import DeliveryWorker, utc_now
from scanner.observe.metrics import Metrics
from scanner.testkit.settings import CHAIN
from tests.deliver.support import (
    Received,
    Receiver,
    add_events,
    add_payment,
    changed,
    deliveries,
    detected,
    drive,
    event_ids,
    hook,
)
from tests.support import lost
from tests.support.wait import until


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_events_arrive_signed_over_the_raw_body_with_every_field(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    metrics = Metrics()
    worker = DeliveryWorker(
        [hook(receiver.url())], session_factory, metrics=metrics.webhooks, poll_interval=0.05
    )
    await worker.prepare()
    pid = await add_payment(engine)
    await add_events(session_factory, detected(pid), changed(pid, "pending", "confirming"))
    first, second = await event_ids(engine)
    await drive(worker, lambda: len(receiver.requests) >= 2, engine=engine)

    one, two = receiver.requests
    assert one.verified() and two.verified()
    assert one.headers["Content-Type"] == "application/json"
    assert one.headers["X-Scanner-Event-Id"] == str(first)
    body = one.json
    assert one.headers["X-Scanner-Delivery-Id"] == body["delivery_id"]
    keys = {r.headers["X-Scanner-Event-Key"] for r in (one, two)}
    assert keys == {one.json["event_key"], two.json["event_key"]} and len(keys) == 2
    assert body["id"] == first and body["type"] == "transfer_detected"
    assert body["chain"] == CHAIN and body["payment_id"] == str(pid)
    assert (body["amount"], body["amount_received"], body["confirmations"]) == ("25.5", "25.5", 1)
    assert (body["tx_hash"], body["log_index"]) == ("0x" + "03" * 32, 3)
    assert body["data"]["value"] == "25500000" and body["data"]["amount"] == "25.500000"
    assert body["created_at"].endswith("Z")
    assert (body["attempt"], body["redelivery"]) == (1, False)
    assert (two.json["id"], two.json["status_from"], two.json["status_to"]) == (
        second,
        "pending",
        "confirming",
    )
    rows = await deliveries(engine)
    assert [(r["status"], r["attempts"], r["last_status"]) for r in rows] == [
        ("delivered", 1, 200)
    ] * 2
    assert all(r["delivered_at"] is not None for r in rows)
    total = "scanner_webhook_deliveries_total"
    assert sample(metrics, total, endpoint="0", outcome="delivered") == 2


def scripted(*answers: int | str) -> tuple[list[str], object]:
    """An answer per attempt: a status code, "slow" (longer than the timeout) or a 429 with
    "retry-after" (1 s) or "retry-after:VALUE"."""
    log: list[str] = []

    async def answer(got: Received) -> web.StreamResponse:
        step = answers[min(len(log), len(answers) - 1)]
        log.append(str(step))
        if step == "slow":
            await asyncio.sleep(1.0)
            return web.Response(status=200)
        if str(step).startswith("retry-after"):  # "retry-after" (1 s) or "retry-after:VALUE"
            value = str(step).partition(":")[2] or "1"
            return web.Response(status=429, headers={"Retry-After": value})
        if step == 301:
            return web.Response(status=301, headers={"Location": "/moved"})
        return web.Response(status=int(step))

    return log, answer


async def test_a_receiver_failing_every_way_gets_the_event_in_the_end(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    log, receiver.answer = scripted(500, "slow", "retry-after", 301, 503, 200)  # type: ignore[assignment]
    metrics = Metrics()
    worker = DeliveryWorker(
        [hook(receiver.url(), timeout=0.3, retry_max=3.0)],
        session_factory,
        metrics=metrics.webhooks,
        poll_interval=0.05,
    )
    await worker.prepare()
    await add_events(session_factory, detected(await add_payment(engine)))
    with structlog.testing.capture_logs() as logs:
        await drive(worker, lambda: len(log) >= 6, engine=engine)
        await asyncio.sleep(0.1)

    attempts = [r.json["attempt"] for r in receiver.requests]
    assert attempts == [1, 2, 3, 4, 5, 6]
    assert all(r.path == "/hooks" for r in receiver.requests)  # the 301 was not followed
    gap = receiver.requests[3].at - receiver.requests[2].at
    assert gap >= 0.95, f"Retry-After: 1 not honoured ({gap:.3f} s)"
    (row,) = await deliveries(engine)
    assert (row["status"], row["attempts"], row["last_status"]) == ("delivered", 6, 200)
    errors = [e["error"] for e in logs if e["event"] == "webhook_attempt_failed"]
    assert errors[0] == "HTTP 500" and errors[1].startswith("timed out after 0.3 s")
    assert errors[2:] == ["HTTP 429", "HTTP 301: redirects are not followed", "HTTP 503"]
    counts = {
        o: sample(metrics, "scanner_webhook_deliveries_total", endpoint="0", outcome=o)
        for o in ("http_error", "timeout", "redirect", "delivered")
    }
    assert counts == {"http_error": 3, "timeout": 1, "redirect": 1, "delivered": 1}


async def test_retry_after_never_retries_sooner_than_the_schedule_nor_later_than_retry_max(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    past = "retry-after:Thu, 01 Jan 2015 00:00:00 GMT"
    log, receiver.answer = scripted("retry-after:0", past, "retry-after:86400", 200)  # type: ignore[assignment]
    worker = DeliveryWorker(  # no jitter: the schedule is 0.4 s, 0.8 s, then retry_max (1 s)
        [hook(receiver.url(), retry_base=0.4, retry_max=1.0)],
        session_factory,
        rand=lambda: 0.5,
        poll_interval=0.05,
    )
    await worker.prepare()
    await add_events(session_factory, detected(await add_payment(engine)))
    await drive(worker, lambda: len(log) >= 4, engine=engine)

    at = [r.at for r in receiver.requests]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(at)]
    assert gaps[0] >= 0.38 and gaps[1] >= 0.78, gaps  # Retry-After: 0 and a past date
    assert 0.95 <= gaps[2] < 3.0, gaps  # Retry-After: a day, capped at retry_max
    (row,) = await deliveries(engine)
    assert (row["status"], row["attempts"]) == ("delivered", 4)


async def test_a_retry_after_that_is_no_number_still_counts_the_attempt(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    _, receiver.answer = scripted("retry-after:\u00b2")  # type: ignore[assignment]
    worker = DeliveryWorker(
        [hook(receiver.url(), max_attempts=2)], session_factory, poll_interval=0.05
    )
    await worker.prepare()
    await add_events(session_factory, detected(await add_payment(engine)))

    async def failed() -> bool:
        return [r["status"] for r in await deliveries(engine)] == ["failed"]

    with structlog.testing.capture_logs() as logs:
        await drive(worker, failed, within=10.0, engine=engine)
        await asyncio.sleep(0.3)
    assert len(receiver.requests) == 2  # max_attempts, whatever the header said
    (row,) = await deliveries(engine)
    assert (row["attempts"], row["last_status"], row["last_error"]) == (2, 429, "HTTP 429")
    events = [e["event"] for e in logs]
    assert events.count("webhook_attempt_failed") == 1
    assert events.count("webhook_delivery_failed") == 1
    assert "webhook_worker_crashed" not in events


async def test_after_max_attempts_a_delivery_fails_and_stops_holding_back_the_next(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    pid = await add_payment(engine)

    async def answer(got: Received) -> web.StreamResponse:
        return web.Response(status=500 if got.json["type"] == "transfer_detected" else 204)

    receiver.answer = answer
    metrics = Metrics()
    worker = DeliveryWorker(
        [hook(receiver.url(), max_attempts=3)],
        session_factory,
        metrics=metrics.webhooks,
        poll_interval=0.05,
    )
    await worker.prepare()
    await add_events(session_factory, detected(pid), changed(pid, "pending", "confirming"))
    with structlog.testing.capture_logs() as logs:
        await drive(worker, lambda: len(receiver.requests) >= 4, engine=engine)
    types = [r.json["type"] for r in receiver.requests]
    assert types == ["transfer_detected"] * 3 + ["status_changed"]
    rows = await deliveries(engine)
    assert [(r["status"], r["attempts"]) for r in rows] == [("failed", 3), ("delivered", 1)]
    assert [e["event"] for e in logs].count("webhook_delivery_failed") == 1
    assert sample(metrics, "scanner_webhook_deliveries_failed_total", endpoint="0") == 1
    await worker.refresh_backlog()
    assert sample(metrics, "scanner_webhook_pending_deliveries", endpoint="0") == 0


async def test_per_payment_order_holds_while_another_payment_fails(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    stuck, free = await add_payment(engine), await add_payment(engine)
    failures = {"left": 4}

    async def answer(got: Received) -> web.StreamResponse:
        if got.json["payment_id"] == str(stuck) and failures["left"] > 0:
            failures["left"] -= 1
            return web.Response(status=500)
        return web.Response(status=200)

    receiver.answer = answer
    worker = DeliveryWorker(
        [hook(receiver.url(), retry_base=0.1, retry_max=0.2)], session_factory, poll_interval=0.05
    )
    await worker.prepare()
    await add_events(
        session_factory,
        detected(stuck, 1),
        detected(free, 2),
        changed(stuck, "pending", "confirming"),
        changed(free, "pending", "confirming"),
        changed(stuck, "confirming", "confirmed"),
    )
    await drive(worker, lambda: len(receiver.requests) >= 9, engine=engine)
    seen = [(r.json["payment_id"], r.json["id"]) for r in receiver.requests]
    of_stuck = [i for p, i in seen if p == str(stuck)]
    assert of_stuck == [of_stuck[0]] * 5 + sorted(of_stuck[5:])  # nothing overtook the first
    assert len(of_stuck) == 7
    first_ok_of_stuck = seen.index((str(stuck), of_stuck[0]), 4)
    of_free = [k for k, (p, _) in enumerate(seen) if p == str(free)]
    assert len(of_free) == 2 and max(of_free) < first_ok_of_stuck  # not held up by the other


async def test_each_event_goes_to_each_matching_endpoint_once(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    hooks = [
        hook(receiver.url("/all")),
        hook(receiver.url("/status"), events=["status_changed"]),
        hook(receiver.url("/polygon"), chains=["polygon"]),
    ]
    worker = DeliveryWorker(hooks, session_factory, poll_interval=0.05)
    await worker.prepare()
    pid = await add_payment(engine)
    await add_events(session_factory, detected(pid), changed(pid, "pending", "confirming"))
    await drive(worker, lambda: len(receiver.requests) >= 3, engine=engine)
    await asyncio.sleep(0.3)
    got = sorted((r.path, r.json["type"]) for r in receiver.requests)
    assert got == [
        ("/all", "status_changed"),
        ("/all", "transfer_detected"),
        ("/status", "status_changed"),
    ]


async def test_a_delivery_held_by_a_dead_process_is_sent_once_its_lease_expires(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    worker = DeliveryWorker([hook(receiver.url())], session_factory, poll_interval=0.05)
    await worker.prepare()
    await add_events(session_factory, detected(await add_payment(engine)))
    async with session_factory() as session, session.begin():
        await store.fan_out(session, [e.route for e in worker.endpoints], datetime.now(UTC))
        (dead,) = await store.claim(
            session, worker.keys, datetime.now(UTC), owner="dead", lease=1.0, limit=5
        )
    await asyncio.sleep(0.5)
    assert await worker.run_once() is False  # still leased: not sent twice
    assert receiver.requests == []
    await drive(worker, lambda: receiver.requests, engine=engine)
    (got,) = receiver.requests
    assert (got.json["delivery_id"], got.json["attempt"]) == (str(dead.id), 2)
    (row,) = await deliveries(engine)
    assert (row["status"], row["attempts"]) == ("delivered", 2)


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
async def test_two_instances_send_each_event_once(
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    other_instance: async_sessionmaker[AsyncSession],
    receiver: Receiver,
) -> None:
    async def answer(got: Received) -> web.StreamResponse:
        await asyncio.sleep(0.01)
        return web.Response(status=200)

    receiver.answer = answer
    metrics = [Metrics(), Metrics()]
    workers = [
        DeliveryWorker(
            [hook(receiver.url())], sessions, metrics=m.webhooks, poll_interval=0.02, batch=4
        )
        for sessions, m in zip((session_factory, other_instance), metrics, strict=True)
    ]
    for worker in workers:
        await worker.prepare()
    payments = [await add_payment(engine) for _ in range(8)]
    for n in range(5):
        await add_events(session_factory, *(detected(p, n) for p in payments))
    wanted = set(await event_ids(engine))
    assert len(wanted) == 40

    async def all_in() -> bool:
        return {r.json["id"] for r in receiver.requests} >= wanted

    await asyncio.gather(*(drive(w, all_in, engine=engine) for w in workers))
    counts = Counter(r.json["id"] for r in receiver.requests)
    assert set(counts) == wanted and set(counts.values()) == {1}
    assert {r.json["attempt"] for r in receiver.requests} == {1}
    shares = [
        sample(m, "scanner_webhook_deliveries_total", endpoint="0", outcome="delivered")
        for m in metrics
    ]
    assert sum(shares) == 40 and min(shares) > 0, shares  # both took part


@pytest.fixture
async def other_instance(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions of a second engine (its own pool) on the same database: another instance."""
    engine = make_engine(settings)
    try:
        yield make_session_factory(engine)
    finally:
        await engine.dispose()


async def test_new_endpoints_start_at_the_newest_event(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    pid = await add_payment(engine)
    await add_events(session_factory, detected(pid))
    worker = DeliveryWorker([hook(receiver.url())], session_factory, poll_interval=0.05)
    await worker.prepare()
    await add_events(session_factory, changed(pid, "pending", "confirming"))
    await drive(worker, lambda: receiver.requests, engine=engine)
    await asyncio.sleep(0.2)
    assert [r.json["type"] for r in receiver.requests] == ["status_changed"]


@pytest.mark.parametrize("standby_had", ["the cursor", "no cursor"])
async def test_a_worker_whose_database_went_back_delivers_from_what_it_shows(
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    standby_had: str,
) -> None:
    """A failover to a standby that lacked the newest commits: the events, deliveries and the
    outbox cursor the worker moved are gone (``no cursor``: the cursor's row too, made after the
    standby's last replayed commit: the endpoint starts again at the newest event, as a new one
    does), and the ids are handed out again. The worker's position is the database's: the new
    events are delivered, under keys of their own."""
    worker = DeliveryWorker([hook(receiver.url())], session_factory, poll_interval=0.05)
    pid = await add_payment(engine)
    if standby_had == "the cursor":
        await worker.prepare()
    standby = await lost.taken(engine)
    try:
        if standby_had == "no cursor":
            await worker.prepare()
        await add_events(session_factory, detected(pid), changed(pid, "pending", "confirming"))
        await drive(worker, lambda: len(receiver.requests) >= 2, engine=engine)
        await standby.restore()
        assert await worker.run_once() is False  # a pass on the promoted standby: nothing due
        await add_events(session_factory, detected(pid, 5), changed(pid, "pending", "paid"))
        await drive(worker, lambda: len(receiver.requests) >= 4, engine=engine)
    finally:
        await standby.drop()
    got = [
        (r.json["id"], r.json["event_key"], r.json["data"].get("log_index"))
        for r in receiver.requests
    ]
    assert [log_index for *_, log_index in got] == [3, None, 5, None]
    assert [i for i, *_ in got[2:]] == [i for i, *_ in got[:2]]  # the ids, handed out again
    assert len({key for _, key, _ in got}) == 4  # each event a key of its own


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
async def test_on_postgresql_a_notify_wakes_the_worker_before_its_poll(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    worker = DeliveryWorker([hook(receiver.url())], session_factory, poll_interval=60.0)

    async def later() -> object:
        await asyncio.sleep(0.5)  # prepared, one empty pass, now asleep for a minute
        pid = await add_payment(engine)
        await add_events(session_factory, detected(pid))  # commits with NOTIFY payment_events
        return pid

    adding = asyncio.create_task(later())
    await drive(worker, lambda: receiver.requests, within=5.0, engine=engine)
    assert receiver.requests[0].json["payment_id"] == str(await adding)


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
async def test_on_postgresql_the_worker_listens_again_when_its_connection_is_gone(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    """A failover (or a restart of the server) ends the connection the worker listens on: it
    listens again, and a NOTIFY still wakes it long before its poll."""
    worker = DeliveryWorker([hook(receiver.url())], session_factory, poll_interval=60.0)
    listening = (
        "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
    )

    async def listener() -> list[int]:
        async with engine.connect() as conn:
            return [int(pid) for pid in (await conn.execute(text(listening))).scalars()]

    async def later() -> object:
        (first,) = await until(listener, 5.0, "the worker listens")
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        await until(lambda: _other(listener, first), 5.0, "the worker listens again")
        pid = await add_payment(engine)
        await add_events(session_factory, detected(pid))  # commits with NOTIFY payment_events
        return pid

    adding = asyncio.create_task(later())
    await drive(worker, lambda: receiver.requests, within=10.0, engine=engine)
    assert receiver.requests[0].json["payment_id"] == str(await adding)


async def _other(listener: Callable[[], Awaitable[list[int]]], first: int) -> bool:
    return any(pid != first for pid in await listener())


async def test_a_payment_row_the_scanner_cannot_use_does_not_stop_deliveries(
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On SQLite a gateway's id may be any text: its ``invalid_payment`` is written under the id
    as stored, and is delivered (listed, redelivered) as any event is, with the events after it.
    On PostgreSQL ``payments.id`` is a uuid, so only the amount is bad there."""
    sqlite = engine.dialect.name == "sqlite"
    bad = "order-1001" if sqlite else uuid.uuid4()
    worker = DeliveryWorker([hook(receiver.url())], session_factory, poll_interval=0.05)
    await worker.prepare()
    await add_payment(engine, amount="NaN", pid=bad)
    good = await add_payment(engine)
    key = StoredKey(bad) if isinstance(bad, str) else bad  # as the scan reads the row's id
    async with session_factory() as session, session.begin():  # as the catch-up writes it
        await outbox.append(session, [invalid_outbox(key, "amount is not a finite number")])
    await add_events(session_factory, detected(good))
    await drive(worker, lambda: len(receiver.requests) >= 2, engine=engine)
    first, second = (r.json for r in receiver.requests)
    assert (first["type"], first["payment_id"], first["amount"]) == (
        "invalid_payment",
        str(bad),
        "NaN",
    )
    assert first["data"]["reason"].startswith("amount is not a finite number")
    assert (second["type"], second["amount"]) == ("transfer_detected", "25.5")

    capsys.readouterr()  # the worker's log lines
    assert await list_command(settings, None, 10, as_json=True) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(row["payment_id"] for row in listed) == sorted([str(bad), str(good)])
    (old,) = [row["delivery_id"] for row in listed if row["payment_id"] == str(bad)]
    async with session_factory() as session, session.begin():
        assert await store.redeliver(session, uuid.UUID(old), utc_now()) is not None
    await drive(worker, lambda: len(receiver.requests) >= 3, engine=engine)
    again = receiver.requests[2].json
    assert (again["payment_id"], again["redelivery"]) == (str(bad), True)


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # PostgreSQL: no such numeric
async def test_an_amount_of_a_huge_exponent_is_delivered_as_the_gateway_wrote_it(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    amount = "1E+999999999999999999"  # its plain form would not fit any memory
    worker = DeliveryWorker([hook(receiver.url())], session_factory, poll_interval=0.05)
    await worker.prepare()
    bad, good = await add_payment(engine, amount=amount), await add_payment(engine)
    with pytest.raises(ValueError) as refused:  # what the scan makes of the row
        to_base_units(Decimal(amount), 18)
    async with session_factory() as session, session.begin():
        await outbox.append(session, [invalid_outbox(bad, str(refused.value))])
    await add_events(session_factory, detected(good))
    with structlog.testing.capture_logs() as logs:
        await drive(worker, lambda: len(receiver.requests) >= 2, within=10.0, engine=engine)
    first, second = receiver.requests
    assert (first.json["amount"], first.json["amount_received"]) == (amount, amount)
    assert first.json["data"]["reason"] == f"amount {amount} is out of range"
    assert len(first.raw) < 2048
    assert (second.json["type"], second.json["amount"]) == ("transfer_detected", "25.5")
    assert "webhook_worker_crashed" not in [e["event"] for e in logs]


class CountingWorker(DeliveryWorker):
    """Counts its passes: an idle worker must sleep, not spin on a held-back delivery."""

    passes = 0

    async def run_once(self) -> bool:
        self.passes += 1
        return await super().run_once()


async def test_a_held_back_delivery_does_not_make_the_worker_spin(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    async def answer(got: Received) -> web.StreamResponse:
        return web.Response(status=500 if len(receiver.requests) == 1 else 200)

    receiver.answer = answer
    worker = CountingWorker(
        [hook(receiver.url(), retry_base=1.5, retry_max=1.5)], session_factory, poll_interval=0.5
    )
    await worker.prepare()
    pid = await add_payment(engine)
    await add_events(session_factory, detected(pid), changed(pid, "pending", "confirming"))
    await drive(worker, lambda: len(receiver.requests) >= 3, engine=engine)
    # ~1.5 s waiting for the retry of the first event, the second held back all along: a few
    # passes (poll 0.5 s, the retry time), not one every few milliseconds
    assert worker.passes <= 12, worker.passes
    assert [r.json["type"] for r in receiver.requests] == [
        "transfer_detected",
        "transfer_detected",
        "status_changed",
    ]


async def test_every_event_type_the_scanner_writes_can_be_chosen_and_is_delivered(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    """The default list is every type; ``transfer_unmatched`` alone may be chosen and arrives."""
    from scanner.config import WEBHOOK_EVENTS
    from scanner.core import events as core_events
    from scanner.scan.verify import VERIFICATION_FAILED

    written = {v for k, v in vars(core_events).items() if k.isupper() and isinstance(v, str)}
    assert set(WEBHOOK_EVENTS) == written | {VERIFICATION_FAILED}
    assert hook(receiver.url()).events == list(WEBHOOK_EVENTS)

    unmatched = hook(receiver.url("/unmatched"), events=["transfer_unmatched"])
    worker = DeliveryWorker([unmatched], session_factory, poll_interval=0.05)
    await worker.prepare()
    pid = await add_payment(engine)
    other_token = detected(pid)
    strays = core_events.transfer_unmatched(pid, _credit_of(other_token))
    await add_events(session_factory, other_token, strays)
    await drive(worker, lambda: receiver.requests, engine=engine)
    await asyncio.sleep(0.3)
    got = [(r.path, r.json["type"], r.json["data"]["value"]) for r in receiver.requests]
    assert got == [("/unmatched", "transfer_unmatched", "25500000")]


def _credit_of(event: Any) -> Any:
    from scanner.core.model import Credit

    data = event.data
    return Credit(
        tx_hash=data["tx_hash"],
        log_index=data["log_index"] + 1,
        block_number=data["block_number"],
        block_hash="0x" + "77" * 32,
        block_timestamp=0,
        value=data["value"],
        late=False,
        orphaned=False,
    )
