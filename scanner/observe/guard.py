"""The metrics port's HTTP server, guarded against connections that only take up room.

Whoever reaches the port can open connections and send nothing. Unguarded, each one holds a file
descriptor until the process runs out (then the database and the nodes cannot be reached either,
and ``/healthz`` stops answering). :class:`GuardedServer` is aiohttp's low-level server with two
bounds:

- at most ``max_connections`` open at once. A connection beyond that takes the place of the
  oldest one that has no request under way (idle connections cannot lock a health probe out);
  when every open connection has a request under way, the new one is closed.
- a connection that has not sent a whole request header within ``header_timeout`` seconds of
  opening is closed; after a response, aiohttp's keep-alive timeout (the same length) closes a
  connection that sends no next request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = structlog.get_logger(__name__)
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class GuardedServer(web.Server):
    """:class:`aiohttp.web.Server` with a connection cap and a deadline for the first header."""

    def __init__(self, handler: Handler, *, max_connections: int, header_timeout: float) -> None:
        super().__init__(self._serve, access_log=None, keepalive_timeout=header_timeout)
        self._handler = handler
        self._max = max_connections
        self._header_timeout = header_timeout
        # Open connections, oldest first, each with the timer that closes it if no header comes.
        self._open: dict[RequestHandler, tuple[asyncio.Transport, asyncio.TimerHandle | None]] = {}
        self._busy: set[RequestHandler] = set()
        self.evicted = 0  # connections closed to make room (for tests and logs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self._open) >= self._max and not self._make_room():
            transport.close()  # every connection is serving a request: this one waits outside
            return
        timer = self._loop.call_later(self._header_timeout, self._expire, handler)
        self._open[handler] = (transport, timer)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        _, timer = self._open.pop(handler, (None, None))
        if timer is not None:
            timer.cancel()
        self._busy.discard(handler)

    def _make_room(self) -> bool:
        """Close the oldest connection with no request under way; False when there is none."""
        for handler, (transport, _) in self._open.items():
            if handler not in self._busy:
                self._forget(handler)
                transport.close()
                self.evicted += 1
                if self.evicted == 1 or self.evicted % 1000 == 0:
                    log.warning("metrics_connections_evicted", total=self.evicted, limit=self._max)
                return True
        return False

    def _expire(self, handler: RequestHandler) -> None:
        """No whole request header in time: close the connection."""
        transport, _ = self._forget(handler)
        if transport is not None:
            transport.close()

    def _forget(
        self, handler: RequestHandler
    ) -> tuple[asyncio.Transport | None, asyncio.TimerHandle | None]:
        transport, timer = self._open.pop(handler, (None, None))
        if timer is not None:
            timer.cancel()
        return transport, timer

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        handler = request.protocol
        entry = self._open.get(handler)
        if entry is not None and entry[1] is not None:  # a header came: no deadline any more
            entry[1].cancel()
            self._open[handler] = (entry[0], None)
        self._busy.add(handler)
        try:
            return await self._handler(request)
        finally:
            self._busy.discard(handler)
