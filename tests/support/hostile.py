"""A hostile JSON-RPC node on loopback (aiohttp): each method answers as a test's handler says,
with helpers for answers without end and answers dripped a byte at a time; ``/ws`` is a
websocket that subscribes and then sends a "head" of 2 MiB (or answers the subscription with
``subscribe_answer`` when a test sets it).

    async with HostileNode() as node:
        node.handlers["eth_blockNumber"] = lambda request, body: node.stream(request, drip(1.0))
        RpcClient("c", [node.url + "/v3/KEY"], timeout=2.0)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import WSMsgType, web

MiB = 1024 * 1024
Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


class HostileNode:
    """An aiohttp JSON-RPC server whose answer to each method is a handler of the test's."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.sent = 0  # bytes of streamed answers written
        self.requests: list[dict[str, Any] | list[Any]] = []
        self.subscribe_answer: bytes | None = None  # the websocket's answer to eth_subscribe
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> HostileNode:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        app.router.add_get("/ws{tail:.*}", self._websocket)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(body)
        first = body[0] if isinstance(body, list) else body
        return await self.handlers[first["method"]](request, body)

    async def stream(self, request: web.Request, parts: AsyncIterator[bytes]) -> web.StreamResponse:
        """A 200 answer written as ``parts`` come (chunked: no length declared)."""
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        try:
            async for part in parts:
                await response.write(part)
                self.sent += len(part)
        except (ConnectionError, RuntimeError):  # the client hung up: what it should do
            pass
        return response

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.TEXT and self.subscribe_answer is not None:
                await ws.send_bytes(self.subscribe_answer)
            elif message.type is WSMsgType.TEXT and "eth_subscribe" in message.data:
                await ws.send_str('{"jsonrpc":"2.0","id":1,"result":"0xsub"}')
                head = {"number": "0x1", "padding": "x" * (2 * MiB)}  # a "head" of 2 MiB
                note = {"subscription": "0xsub", "result": head}
                await ws.send_bytes(orjson.dumps({"method": "eth_subscription", "params": note}))
        return ws


async def endless_quantity(chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``{"jsonrpc":"2.0","id":1,"result":"0x1111…`` without end (a 1 GB answer, and more)."""
    yield b'{"jsonrpc":"2.0","id":1,"result":"0x'
    while True:
        yield b"1" * chunk
        await asyncio.sleep(0)


async def drip(every: float) -> AsyncIterator[bytes]:
    """A byte every ``every`` seconds, for ever: each read of httpx gets something in time."""
    while True:
        yield b" "
        await asyncio.sleep(every)


def answer(body: Any, result: Callable[[dict[str, Any]], bytes]) -> web.Response:
    """The answer to a request (one object, or a batch: each item answered), each item's result
    the JSON text ``result(item)`` gives, as it is (it may be megabytes). ``eth_blockNumber``
    items (``eth_getLogs`` asks for the head in the same batch) answer a head far ahead."""
    items = body if isinstance(body, list) else [body]
    out = [
        b'{"jsonrpc":"2.0","id":%d,"result":%s}'
        % (item["id"], b'"0x1000000"' if item["method"] == "eth_blockNumber" else result(item))
        for item in items
    ]
    text = b"[" + b",".join(out) + b"]" if isinstance(body, list) else out[0]
    return web.Response(body=text, content_type="application/json")
