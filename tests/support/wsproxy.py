"""A websocket proxy for tests: forwards a client's websocket to a real node's (anvil serves one
on its HTTP port), and can drop, refuse or freeze on request.

    async with WsProxy(anvil_ws_url) as proxy:
        url = proxy.url + "/ws/KEY"     # the path is ignored (it stands for an API key)
        proxy.drop()                     # close every open connection (a dropped link)
        proxy.refuse = True              # new connections get HTTP 503 until set back
        proxy.freeze()                   # open connections stay open and forward nothing
        assert proxy.connections == 2    # websockets accepted so far
"""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType
from typing import Self

import aiohttp
from aiohttp import web


class WsProxy:
    """A websocket proxy on 127.0.0.1 (a free port) in front of ``upstream`` (``ws://…``)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = 0
        self.refuse = False
        self.connections = 0
        self._open: list[tuple[web.WebSocketResponse, aiohttp.ClientWebSocketResponse]] = []
        self._transports: list[asyncio.Transport] = []
        self._frozen: set[int] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def drop(self) -> None:
        """Cut every open connection, no close frame (the client sees its websocket end)."""
        for transport in self._transports:
            transport.abort()
        self._transports.clear()

    async def close_all(self) -> None:
        for client, upstream in list(self._open):
            await client.close()
            await upstream.close()

    def freeze(self) -> None:
        """Open connections stay open (pings answered) and forward nothing more."""
        self._frozen.update(id(client) for client, _ in self._open)

    @property
    def open(self) -> int:
        return len(self._open)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.refuse:
            return web.Response(status=503, text="proxy: refusing")
        assert self._session is not None
        client = web.WebSocketResponse()
        await client.prepare(request)
        self.connections += 1
        if request.transport is not None:
            self._transports.append(request.transport)
        async with self._session.ws_connect(self.upstream) as upstream:
            pair = (client, upstream)
            self._open.append(pair)
            try:
                await asyncio.gather(self._pump_up(client, upstream), self._pump_down(pair))
            finally:
                self._open.remove(pair)
                await client.close()
        return client

    async def _pump_up(
        self, client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse
    ) -> None:
        async for message in client:
            if message.type is aiohttp.WSMsgType.TEXT:
                await upstream.send_str(message.data)
            elif message.type is aiohttp.WSMsgType.BINARY:
                await upstream.send_bytes(message.data)
        await upstream.close()

    async def _pump_down(
        self, pair: tuple[web.WebSocketResponse, aiohttp.ClientWebSocketResponse]
    ) -> None:
        client, upstream = pair
        async for message in upstream:
            if message.type is aiohttp.WSMsgType.TEXT and id(client) not in self._frozen:
                await client.send_str(message.data)
        await client.close()
