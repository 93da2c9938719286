"""What the delivery tests share: a real HTTP receiver (aiohttp) that records the raw bytes
and headers of each request and answers as a test tells it; payments and events written as the
scanner writes them; and a worker run until a condition holds."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.config import WebhookSettings
from scanner.core import events as ev
from scanner.core.amounts import event_data
from scanner.core.model import Event
from scanner.core.plan import OutboxRow
from scanner.db import events as outbox
from scanner.deliver.message import verify
from scanner.deliver.worker import DeliveryWorker
from scanner.testkit.gateway import NewPayment, db_id, insert_payments
from scanner.testkit.settings import CHAIN
from tests.support.wait import holds, until

SECRET = "whsec_test_0123456789abcdef"


@dataclass
class Received:
    raw: bytes
    headers: dict[str, str]
    at: float
    path: str

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.raw)
        return data

    def verified(self, secret: str = SECRET) -> bool:
        return verify(secret, self.headers["X-Scanner-Signature"], self.raw, time.time())


Answer = Callable[[Received], Awaitable[web.StreamResponse]]


async def ok(_: Received) -> web.StreamResponse:
    return web.Response(status=200, text="ok")


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.1; ``answer`` decides each response."""

    answer: Answer = ok
    requests: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        got = Received(await request.read(), dict(request.headers), time.monotonic(), request.path)
        self.requests.append(got)
        return await self.answer(got)

    def delivered_ids(self) -> list[int]:
        """Event ids of requests answered 2xx (by the default answer), in arrival order."""
        return [r.json["id"] for r in self.requests]


def hook(url: str, **overrides: Any) -> WebhookSettings:
    """Settings of one endpoint with a fast retry schedule (milliseconds, not hours)."""
    values: dict[str, Any] = {
        "url": url,
        "secret": SECRET,
        "timeout": 2.0,
        "retry_base": 0.01,
        "retry_max": 0.1,
        **overrides,
    }
    return WebhookSettings.model_validate(values)


async def add_payment(
    engine: AsyncEngine,
    amount: str = "25.5",
    chain: str = CHAIN,
    pid: uuid.UUID | str | None = None,
) -> Any:
    """A payment as a gateway writes it (the test kit's row; native coin, so no token row is
    needed), ``pid`` as the gateway spells it (a new uuid by default); then paid in full with one
    confirmation, as the scanner leaves it (what a webhook's body reads back)."""
    pid = uuid.uuid4() if pid is None else pid
    now = time.time()
    row = NewPayment(pid, None, chain, "0x" + "ab" * 20, amount, now + 3600, now)
    async with engine.begin() as conn:
        await insert_payments(conn, [row])
        await conn.execute(
            text("UPDATE payments SET amount_received = :r, confirmations = 1 WHERE id = :id"),
            {"r": amount, "id": db_id(engine, pid)},
        )
    return pid


def detected(pid: uuid.UUID, log_index: int = 3, value: int = 25_500_000) -> Event:
    from scanner.core.model import Credit

    credit = Credit(
        tx_hash="0x" + f"{log_index:02x}" * 32,
        log_index=log_index,
        block_number=7,
        block_hash="0x" + "77" * 32,
        block_timestamp=int(time.time()),
        value=value,
        late=False,
        orphaned=False,
    )
    return ev.transfer_detected(pid, credit)


def changed(pid: uuid.UUID, old: str, new: str, received: int = 25_500_000) -> Event:
    return ev.status_changed(pid, old, new, received)  # type: ignore[arg-type]


async def add_events(sessions: async_sessionmaker[AsyncSession], *events: Event) -> None:
    """Append to the outbox exactly as a scan does (same function, same transaction shape)."""
    rows = [OutboxRow(e, event_data(e, 6), e.payment_id) for e in events]
    async with sessions() as session, session.begin():
        await outbox.append(session, rows)


async def event_ids(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT id FROM payment_events ORDER BY id"))
        return [int(r[0]) for r in rows]


async def deliveries(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, endpoint, event_id, status, attempts, last_status, last_error,"
                " redelivery, delivered_at FROM webhook_deliveries ORDER BY event_id, created_at"
            )
        )
        return [dict(r._mapping) for r in rows]


async def drive(
    worker: DeliveryWorker,
    done: Callable[[], Any],
    *,
    within: float = 20.0,
    engine: AsyncEngine | None = None,
) -> None:
    """Run the worker's loop until ``done()`` holds (polled as :mod:`tests.support.wait`
    polls), then stop it; fails if the worker stops first."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, engine))

    async def reached() -> Any:
        if not (value := await holds(done)) and task.done():
            task.result()
            raise AssertionError("the worker stopped")
        return value

    try:
        await until(reached, within, "the worker's condition")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


Script = Callable[["RawReceiver", asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawReceiver:
    """A hostile receiver on 127.0.0.1: plain asyncio, so that a test writes its answer byte by
    byte as no HTTP server would (drips, endless bodies). ``sent`` counts the bytes of answers
    the client's side took in (each write once drained)."""

    script: Script
    sent: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def __aenter__(self) -> RawReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in self._writers:  # a script still writing ends at its next write
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5.0)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent += len(data)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            await self.script(self, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: what a capped or timed-out read does
        finally:
            writer.close()
