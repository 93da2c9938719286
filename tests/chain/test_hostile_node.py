"""A hostile node of our own on loopback: answers of any size, for any time, and a websocket that
sends a message larger than any head. Each read stops at its byte cap or its deadline, with a
clear error, in bounded time and memory."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from scanner.chain.heads import HeadSubscription, WsBackoff
from scanner.chain.reader import ChainReader
from scanner.chain.rpc import RpcClient
from scanner.core.ranges import RangeSizer
from scanner.errors import MalformedResponse, RangeTooLarge, RpcError, RpcTransportError
from scanner.scan.fetch import fetch_logs
from scanner.testkit.settings import chain_settings
from tests.chain.conftest import FAST
from tests.support.hostile import Handler, HostileNode, MiB, answer, drip, endless_quantity
from tests.support.wait import until

TOKEN = "0x" + "11" * 20
HASH = "0x" + "ab" * 32


@pytest.fixture
async def node() -> AsyncIterator[HostileNode]:
    async with HostileNode() as hostile:
        yield hostile


def client(node: HostileNode, **options: Any) -> RpcClient:
    return RpcClient("hostile", [node.url + "/v3/KEY"], max_attempts=2, backoff=FAST, **options)


async def test_an_endless_answer_stops_at_the_cap_in_bounded_time_and_memory(
    node: HostileNode,
) -> None:
    node.handlers["eth_blockNumber"] = lambda request, body: node.stream(
        request, endless_quantity()
    )
    tracemalloc.start()
    started = time.monotonic()
    try:
        async with asyncio.timeout(20), client(node, max_response_bytes=4 * MiB) as rpc:
            with pytest.raises(MalformedResponse, match="larger than 4,194,304 bytes") as caught:
                await ChainReader(rpc).head()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.kind == "too_large" and not caught.value.transient
    assert time.monotonic() - started < 10
    assert peak < 16 * MiB  # the cap and a chunk or two, not the answer
    assert len(node.requests) == 1  # not retried: the same question gets the same answer


async def test_an_answer_of_millions_of_tiny_objects_is_refused_before_it_is_parsed(
    node: HostileNode,
) -> None:
    """24 MB of ``{"a":1}`` (3 million objects) is under the 64 MiB cap but would take about
    750 MB once parsed: refused as too large (a getLogs range shrinks), never parsed; a sane
    answer of the same size is read."""
    tiny = b"[" + b",".join([b'{"a":1}'] * 3_000_000) + b"]"
    log = orjson.dumps(
        {
            "address": TOKEN,
            "topics": [HASH, HASH, HASH],
            "data": HASH,
            "blockNumber": "0x1",
            "blockHash": HASH,
            "transactionHash": HASH,
            "transactionIndex": "0x0",
            "logIndex": "0x0",
            "removed": False,
        }
    )
    sane = b"[" + b",".join([log] * (len(tiny) // len(log))) + b"]"
    answers = iter([tiny, sane])

    async def logs(request: web.Request, body: Any) -> web.StreamResponse:
        result = next(answers)
        return answer(body, lambda item: result)

    node.handlers["eth_getLogs"] = logs
    async with client(node) as rpc:
        reader = ChainReader(rpc)
        tracemalloc.start()
        try:
            with pytest.raises(RangeTooLarge, match="would take over"):
                await reader.logs([TOKEN], HASH, 1, 1)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 128 * MiB  # the answer's bytes, not 3 million objects
        assert len(await reader.logs([TOKEN], HASH, 1, 1)) == len(tiny) // len(log)


async def test_a_declared_length_above_the_cap_is_refused_before_reading(
    node: HostileNode,
) -> None:
    async def huge(request: web.Request, body: Any) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(1024 * MiB)})
        await response.prepare(request)
        await node.stream(request, endless_quantity())
        return response

    node.handlers["eth_chainId"] = huge
    async with asyncio.timeout(20), client(node, max_response_bytes=MiB) as rpc:
        with pytest.raises(MalformedResponse, match="larger than") as caught:
            await ChainReader(rpc).chain_id()
    assert caught.value.kind == "too_large"


async def test_a_node_dripping_its_answer_is_cut_off_at_one_deadline_per_attempt(
    node: HostileNode,
) -> None:
    """httpx's read timeout restarts with every byte; the attempt's deadline does not."""
    node.handlers["eth_blockNumber"] = lambda request, body: node.stream(request, drip(0.2))
    started = time.monotonic()
    async with asyncio.timeout(20), client(node, timeout=1.0) as rpc:
        with pytest.raises(RpcTransportError, match=r"no whole answer within 1 s"):
            await ChainReader(rpc).head()
    assert time.monotonic() - started < 4  # two attempts of 1 s and a short backoff
    assert len(node.requests) == 2  # transient: retried (and failed over, with more URLs)


async def test_a_getlogs_answer_over_the_cap_shrinks_the_range_until_it_fits(
    node: HostileNode,
) -> None:
    """More than 8 blocks answer 2 MiB; 8 or fewer an empty list: the range halves and reads."""

    def logs(item: dict[str, Any]) -> bytes:
        flt = item["params"][0]
        blocks = int(flt["toBlock"], 16) - int(flt["fromBlock"], 16) + 1
        if blocks > 8:
            return b"[" + b",".join([b'"' + b"0" * 1000 + b'"'] * 2048) + b"]"
        return b"[]"

    node.handlers["eth_getLogs"] = lambda request, body: asyncio.sleep(0, answer(body, logs))
    sizer = RangeSizer(32)
    async with client(node, max_response_bytes=MiB) as rpc:
        found = await fetch_logs(ChainReader(rpc), [TOKEN], 1, 32, sizer, split=1)
    assert found == []
    assert sizer.size <= 8


async def test_a_batch_answer_over_the_cap_is_asked_in_halves(node: HostileNode) -> None:
    async def headers(request: web.Request, body: Any) -> web.StreamResponse:
        pad = "0x" + "00" * (200 * 1024)  # ~400 kB a block: four of them pass the cap
        answers = [
            {
                "jsonrpc": "2.0",
                "id": item["id"],
                "result": {
                    "number": item["params"][0],
                    "hash": HASH,
                    "parentHash": HASH,
                    "timestamp": "0x64",
                    "extraData": pad,
                },
            }
            for item in body
        ]
        return web.Response(body=orjson.dumps(answers), content_type="application/json")

    node.handlers["eth_getBlockByNumber"] = headers
    async with client(node, max_response_bytes=MiB) as rpc:
        found = await ChainReader(rpc).headers(1, 8)
    assert [h.number for h in found] == list(range(1, 9))
    assert max(len(b) for b in node.requests if isinstance(b, list)) == 8
    assert {len(b) for b in node.requests[1:] if isinstance(b, list)} <= {1, 2, 4}


async def test_the_scanner_caps_answers_at_64_mib_by_default_and_as_configured(
    node: HostileNode,
) -> None:
    """What ``scanner run`` builds from its settings: an endless answer stops at the default cap
    (without one it is read until memory runs out), and at ``rpc_max_response_bytes``."""
    node.handlers["eth_blockNumber"] = lambda request, body: node.stream(
        request, endless_quantity()
    )
    for overrides, cap in (({}, "67,108,864"), ({"rpc_max_response_bytes": 256 * 1024}, "262,144")):
        reader = ChainReader.from_settings(chain_settings(node.url, [], **overrides), None)
        try:
            async with asyncio.timeout(30):
                with pytest.raises(MalformedResponse, match=f"larger than {cap} bytes"):
                    await reader.head()
        finally:
            await reader.client.aclose()
    assert node.sent < 2 * 64 * MiB + 256 * 1024 + 8 * MiB


async def test_a_websocket_message_larger_than_any_head_drops_the_connection(
    node: HostileNode,
) -> None:
    """A head is a kilobyte or two; a 2 MiB message ends the connection (polling goes on and
    the subscription reconnects), it is never read whole."""
    url = node.url.replace("http://", "ws://") + "/ws"
    with capture_logs() as logs:
        async with (
            asyncio.timeout(20),
            HeadSubscription("hostile", url, backoff=WsBackoff(initial=5.0)),
        ):
            await until(lambda: any(e["event"] == "ws_disconnected" for e in logs), 20)
    (dropped,) = [e for e in logs if e["event"] == "ws_disconnected"]
    assert dropped["reason"] == "error"
    assert "message size" in dropped["message"].lower()


KEY = "SEKRETRPCKEY0123456789abcdef"  # a provider's key in the URL's path, 28 characters


def pieces_of(key: str, text: str) -> list[str]:
    """The pieces of ``key`` (six characters or more) that ``text`` shows."""
    return [key[i : i + 6] for i in range(len(key) - 5) if key[i : i + 6] in text]


async def test_a_key_the_node_quotes_across_a_cut_leaves_no_piece_in_any_error(
    node: HostileNode,
) -> None:
    """The node echoes the key from the URL it was asked on, after ``before`` characters, in
    an HTTP error page, a limiter's refusal, an answer of the wrong shape (a receipt, a code, a
    log) and a refused subscription. Each error quotes a few dozen characters of what the node
    sent, scrubbed whole and then cut: wherever the cut falls, no piece of the key is shown."""
    said = {"text": ""}

    def text() -> str:
        return said["text"]

    def wrong_shape(value: Callable[[], object]) -> Handler:
        return lambda request, body: asyncio.sleep(
            0, answer(body, lambda item: orjson.dumps(value()))
        )

    async def http_401(request: web.Request, body: Any) -> web.StreamResponse:
        return web.Response(status=401, text=text())

    async def busy(request: web.Request, body: Any) -> web.StreamResponse:
        refused = {"Error": "lack of computing resources: " + text()}
        return web.Response(body=orjson.dumps(refused), content_type="application/json")

    node.handlers |= {
        "eth_chainId": http_401,
        "eth_blockNumber": busy,
        "eth_getTransactionReceipt": wrong_shape(lambda: {"blockHash": text()}),
        "eth_getCode": wrong_shape(text),
        "eth_getLogs": wrong_shape(lambda: [text()]),
    }
    rpc = RpcClient("hostile", [f"{node.url}/v3/{KEY}"], max_attempts=1, backoff=FAST)
    ws = f"{node.url.replace('http://', 'ws://')}/ws/{KEY}"
    async with rpc:
        reader = ChainReader(rpc)
        for before in range(1, 230, 7):  # every cut (60 to 200 characters) is crossed
            said["text"] = "x" * before + KEY + " and more"
            shown: list[str] = []
            for read in (
                reader.chain_id(),
                reader.head(),
                reader.receipt(HASH),
                reader.has_code(TOKEN),
                reader.logs([TOKEN], HASH, 1, 1),
            ):
                with pytest.raises(RpcError) as caught:
                    await read
                shown.append(str(caught.value))
            node.subscribe_answer = orjson.dumps(
                {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": text()}}
            )
            with capture_logs() as logs:
                async with asyncio.timeout(20), HeadSubscription("hostile", ws):
                    await until(lambda: any(e["event"] == "ws_disconnected" for e in logs), 20)
            shown += [str(e["message"]) for e in logs if e["event"] == "ws_disconnected"]
            assert len(shown) == 6 and all("x" * min(before, 20) in s for s in shown), shown
            assert [s for s in shown if pieces_of(KEY, s)] == [], before
