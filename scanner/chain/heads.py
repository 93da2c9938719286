"""``newHeads`` over a websocket: a new head wakes the chain's tick at once.

A chain with ``ws_url`` keeps one ``eth_subscribe("newHeads")`` open (aiohttp's websocket
client). A head that arrives only wakes the tick: the tick reads the head, headers and logs over
HTTP as it does when it polls, and finds reorgs by hash and parent hash as always. Nothing the
subscription says is trusted (anvil, like other nodes, resends replaced heights with new hashes
and never marks logs ``removed``).

Polling at ``poll_interval`` goes on beside it as the fallback and the watchdog. Each head the
poll reads is passed to :meth:`HeadSubscription.polled`; when it runs :data:`QUIET_BLOCKS` or more
blocks ahead of the newest head the subscription delivered, the subscription has gone quiet
(``ws_quiet``) and is reconnected. A connection that drops (closed, reset, no pong to the
heartbeat's pings, a refused subscription) is reconnected too, with exponential backoff and
jitter (``ws_disconnected`` with the reason and the wait), while polling carries on. The URL
carries an API key: it is shown only redacted, and error text is scrubbed of it.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
import structlog

from scanner.chain.shapes import show
from scanner.errors import MalformedResponse, RpcError, RpcResponseError, RpcTransportError
from scanner.secrets import redact_url, scrub, url_secrets

QUIET_BLOCKS = 3  # the poll this many blocks ahead of the subscription: it went quiet
HEARTBEAT_S = 20.0  # a ping every 20 s; no pong within 10 s closes the connection
CONNECT_TIMEOUT_S = 10.0  # the handshake and the subscription's answer
HEAD_MESSAGE_BYTES = 1024 * 1024  # the largest message read (a head is a kilobyte or two)
SHOWN_WINDOW = 4096  # what of a refusal is scrubbed; 200 characters of it are shown
SUBSCRIBE = orjson.dumps(
    {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
).decode()

log = structlog.get_logger(__name__)


class HeadsObserver(Protocol):
    """Where the subscription reports (the metrics)."""

    def ws_connected(self, chain: str, connected: bool) -> None: ...

    def ws_head(self, chain: str) -> None: ...

    def ws_disconnected(self, chain: str, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class WsBackoff:
    """Waits between connections: ``initial``·2ⁿ plus up to half of it in jitter, at most
    ``maximum``; back to ``initial`` once a connection has delivered a head."""

    initial: float = 0.5
    maximum: float = 30.0


class HeadSubscription:
    """One chain's ``newHeads`` subscription; ``async with`` runs it in a task of its own."""

    def __init__(
        self,
        chain: str,
        url: str,
        *,
        observer: HeadsObserver | None = None,
        backoff: WsBackoff = WsBackoff(),
        heartbeat: float = HEARTBEAT_S,
        max_message_bytes: int = HEAD_MESSAGE_BYTES,
    ) -> None:
        self.chain = chain
        self.url = url
        self.shown = redact_url(url)
        self._secrets = url_secrets(url)  # the URL and the keys in it
        self.observer = observer
        self.backoff = backoff
        self.heartbeat = heartbeat
        self.max_message_bytes = max_message_bytes
        self.connected = False
        self.newest: int | None = None  # newest head delivered (or the poll's, at connect)
        self.polled_head: int | None = None
        self._arrived = asyncio.Event()
        self._quiet: asyncio.Timeout | None = None
        self._delivered = False
        self._subscription = ""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """:meth:`run` in a task of its own, kept until :meth:`aclose`."""
        self._task = asyncio.create_task(self.run(), name=f"heads-{self.chain}")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> HeadSubscription:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- what the chain's loop calls ---------------------------------------------------------

    async def arrival(self, stop: asyncio.Event) -> None:
        """Until a head arrives (at once when one arrived since the last call) or ``stop``."""
        if not self._arrived.is_set():
            waiters = [asyncio.ensure_future(e.wait()) for e in (self._arrived, stop)]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        self._arrived.clear()

    def polled(self, head: int) -> None:
        """The watchdog: the head the poll read over HTTP. A subscription that has delivered
        nothing up to :data:`QUIET_BLOCKS` blocks below it has gone quiet: reconnect."""
        self.polled_head = head
        if not self.connected or self._quiet is None:
            return
        if self.newest is None:
            self.newest = head
        if head - self.newest >= QUIET_BLOCKS and self._quiet.when() is None:
            log.warning(
                "ws_quiet", chain=self.chain, url=self.shown, newest=self.newest, polled=head
            )
            self._quiet.reschedule(asyncio.get_running_loop().time())

    # -- the connection ----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe, read heads; reconnect with backoff, forever (until cancelled)."""
        delay = self.backoff.initial
        self._report_connected(False)
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    reason, message = await self._connection(session)
                except Exception as exc:  # unforeseen: never let it end the chain's loop
                    reason, message = "error", scrub(f"{type(exc).__name__}: {exc}", self._secrets)
                if self._delivered:
                    delay = self.backoff.initial
                wait = delay + random.uniform(0, delay / 2)
                log.warning(
                    "ws_disconnected",
                    chain=self.chain,
                    url=self.shown,
                    reason=reason,
                    message=message,
                    retry_in=round(wait, 2),
                )
                if self.observer is not None:
                    self.observer.ws_disconnected(self.chain, reason)
                await asyncio.sleep(wait)
                delay = min(self.backoff.maximum, delay * 2)

    async def _connection(self, session: aiohttp.ClientSession) -> tuple[str, str]:
        """One connection, until it ends: (reason, message) of its end."""
        self._delivered = False
        try:
            ws = await self._connect(session)
        except RpcError as exc:
            return ("refused" if isinstance(exc, RpcResponseError) else "error"), str(exc)
        try:
            async with asyncio.timeout(None) as self._quiet:
                self._up()
                await self._read(ws)
            return "closed", f"closed by the server (code {ws.close_code})"
        except TimeoutError:
            return "quiet", f"the poll ran {QUIET_BLOCKS} or more blocks ahead"
        except RpcError as exc:
            return "error", str(exc)
        finally:
            self._down()
            with suppress(aiohttp.ClientError, OSError, TimeoutError):
                await ws.close()

    async def _connect(self, session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
        """The handshake and ``eth_subscribe``; errors translated to :class:`RpcError`."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                ws = await session.ws_connect(
                    self.url, heartbeat=self.heartbeat, max_msg_size=self.max_message_bytes
                )
                try:
                    await ws.send_str(SUBSCRIBE)
                    self._subscription = await self._subscribed(ws)
                except BaseException:
                    await ws.close()
                    raise
        except TimeoutError as exc:
            raise self._error("no answer in time", exc) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise self._error(str(exc) or type(exc).__name__, exc) from None
        return ws

    async def _subscribed(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """The subscription id from the answer to ``eth_subscribe`` (id 1)."""
        while True:
            message = await ws.receive()
            if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise aiohttp.ClientConnectionError(f"closed before subscribing ({message.type})")
            answer = orjson.loads(message.data)
            if not isinstance(answer, dict) or answer.get("id") != 1:
                continue
            if isinstance(answer.get("result"), str):
                return str(answer["result"])
            error = answer.get("error")
            error = error if isinstance(error, dict) else {}
            said = error.get("message")
            text = said if isinstance(said, str) else show(answer, SHOWN_WINDOW)
            text = scrub(text[:SHOWN_WINDOW], self._secrets)[:200]  # scrubbed whole, then cut
            raise RpcResponseError(
                f"eth_subscribe refused: {text}",
                chain=self.chain,
                method="eth_subscribe",
                code=error.get("code"),
            )

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Heads until the connection closes; an error frame raises."""
        async for message in ws:
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self._message(message.data)
            elif message.type is aiohttp.WSMsgType.ERROR:
                exc = message.data if isinstance(message.data, Exception) else ws.exception()
                raise self._error(str(exc) if exc else "websocket error", exc)

    def _message(self, data: str | bytes) -> None:
        try:
            body: Any = orjson.loads(data)
            if body.get("method") != "eth_subscription":
                return
            params = body["params"]
            if params["subscription"] != self._subscription:
                return
            number = int(params["result"]["number"], 16)
        except (AttributeError, KeyError, TypeError, ValueError):  # JSONDecodeError too
            log.warning("ws_message_malformed", chain=self.chain, url=self.shown)
            return
        self._head(number)

    def _head(self, number: int) -> None:
        """A head arrived: wake the tick; the subscription is not quiet."""
        self._delivered = True
        self.newest = number if self.newest is None else max(self.newest, number)
        self._arrived.set()
        if self.observer is not None:
            self.observer.ws_head(self.chain)

    def _up(self) -> None:
        self.connected = True
        self.newest = self.polled_head
        log.info("ws_subscribed", chain=self.chain, url=self.shown)
        self._report_connected(True)

    def _down(self) -> None:
        self.connected = False
        self._quiet = None
        self._report_connected(False)

    def _report_connected(self, connected: bool) -> None:
        if self.observer is not None:
            self.observer.ws_connected(self.chain, connected)

    def _error(self, message: str, exc: BaseException | None) -> RpcError:
        kind = MalformedResponse if isinstance(exc, ValueError) else RpcTransportError
        return kind(scrub(message, self._secrets), chain=self.chain, method="eth_subscribe")
