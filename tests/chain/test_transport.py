"""The RPC client's HTTP transport, against a node of our own on loopback: no more connections
than ``max_connections``, no proxy read from the environment unless ``trust_env`` says so, an
answer left unread (cut at the cap, an error page) never spoils the next request, and a
compressed answer is read decompressed, the cap counting what it decompresses to."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from scanner.chain.rpc import RpcClient
from scanner.errors import MalformedResponse, RpcTransportError
from tests.chain.conftest import FAST
from tests.support.hostile import HostileNode, MiB, answer, endless_quantity

CHAIN_ID = b'"0x7a69"'


@pytest.fixture
async def node() -> AsyncIterator[HostileNode]:
    async with HostileNode() as hostile:
        hostile.handlers["eth_chainId"] = chain_id
        yield hostile


async def chain_id(request: web.Request, body: Any) -> web.StreamResponse:
    return answer(body, lambda item: CHAIN_ID)


def client(url: str, **options: Any) -> RpcClient:
    return RpcClient("t", [url + "/v3/KEY"], max_attempts=1, backoff=FAST, **options)


async def test_no_more_connections_than_max_connections(node: HostileNode) -> None:
    """Six calls at once through a pool of two: two at a time, on two connections."""
    in_flight = {"now": 0, "most": 0}
    ports: set[int] = set()

    async def slow(request: web.Request, body: Any) -> web.StreamResponse:
        ports.add(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        in_flight["now"] += 1
        in_flight["most"] = max(in_flight["most"], in_flight["now"])
        await asyncio.sleep(0.2)
        in_flight["now"] -= 1
        return answer(body, lambda item: b'"0x1"')

    node.handlers["eth_gasPrice"] = slow
    async with client(node.url, max_connections=2, timeout=10.0) as rpc:
        results = await asyncio.gather(*(rpc.call("eth_gasPrice") for _ in range(6)))
    assert results == ["0x1"] * 6
    assert in_flight["most"] == 2
    assert len(ports) == 2  # kept alive and reused


@pytest.mark.parametrize("trust_env", [False, True])
async def test_a_proxy_in_the_environment_is_used_only_with_trust_env(
    node: HostileNode, monkeypatch: pytest.MonkeyPatch, trust_env: bool
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, node.url)
    async with client("http://node.invalid", trust_env=trust_env, timeout=10.0) as rpc:
        if trust_env:
            assert await rpc.call("eth_chainId") == "0x7a69"
        else:
            with pytest.raises(RpcTransportError, match="ConnectError"):
                await rpc.call("eth_chainId")
    assert len(node.requests) == (1 if trust_env else 0)


async def test_an_answer_left_unread_does_not_spoil_the_next_request(node: HostileNode) -> None:
    """One connection: an endless answer cut at the cap, then a long error page cut at 64 KiB,
    each followed by a call answered right on a connection whose bytes are its own."""

    async def error_page(request: web.Request, body: Any) -> web.StreamResponse:
        return web.Response(status=503, body=b'{"jsonrpc":"2.0"}' + b" " * (4 * MiB))

    node.handlers["eth_blockNumber"] = lambda request, body: node.stream(
        request, endless_quantity()
    )
    node.handlers["eth_gasPrice"] = error_page
    async with client(node.url, max_connections=1, max_response_bytes=MiB, timeout=10.0) as rpc:
        for _ in range(2):
            with pytest.raises(MalformedResponse, match="larger than 1,048,576 bytes"):
                await rpc.call("eth_blockNumber")
            assert await rpc.call("eth_chainId") == "0x7a69"
            with pytest.raises(RpcTransportError, match="503"):
                await rpc.call("eth_gasPrice")
            assert await rpc.call("eth_chainId") == "0x7a69"


async def test_a_compressed_answer_is_read_and_capped_decompressed(node: HostileNode) -> None:
    def gzipped(text: bytes) -> web.Response:
        return web.Response(
            body=gzip.compress(text),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    async def small(request: web.Request, body: Any) -> web.StreamResponse:
        return gzipped(b'{"jsonrpc":"2.0","id":%d,"result":"0x2a"}' % body["id"])

    async def bomb(request: web.Request, body: Any) -> web.StreamResponse:
        return gzipped(b'{"jsonrpc":"2.0","id":%d,"result":"0x' % body["id"] + b"1" * 8 * MiB)

    node.handlers |= {"eth_blockNumber": small, "eth_gasPrice": bomb}
    async with client(node.url, max_response_bytes=MiB, timeout=10.0) as rpc:
        assert await rpc.call("eth_blockNumber") == "0x2a"
        with pytest.raises(MalformedResponse, match="larger than 1,048,576 bytes"):
            await rpc.call("eth_gasPrice")
