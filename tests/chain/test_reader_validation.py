"""What the reader refuses from a node, served by a hand-written fake node (no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from scanner.chain.reader import ChainReader
from scanner.chain.rpc import RpcClient
from scanner.errors import BlockNotAvailable, HistoryUnavailable, MalformedResponse
from tests.chain.conftest import FAST

H1 = "0x" + "AB" * 32
H0 = "0x" + "cd" * 32
Answer = Callable[[str, list[Any]], Any]


def block(number: int | str, **fields: Any) -> dict[str, Any]:
    return {
        "number": hex(number) if isinstance(number, int) else number,
        "hash": H1,
        "parentHash": H0,
        "timestamp": "0x64",
        "transactions": [],
        **fields,
    }


class FakeNode:
    """Answers each JSON-RPC item with ``answer(method, params)``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        items = body if isinstance(body, list) else [body]
        out = [
            {"jsonrpc": "2.0", "id": i["id"], "result": self.answer(i["method"], i["params"])}
            for i in items
        ]
        return httpx.Response(200, content=orjson.dumps(out if isinstance(body, list) else out[0]))


@asynccontextmanager
async def fake_reader(answer: Answer) -> AsyncIterator[ChainReader]:
    """A ChainReader whose node is ``answer``."""
    transport = httpx.MockTransport(FakeNode(answer))
    async with RpcClient(
        "fake", ["http://node/v3/KEYKEYKEY"], max_attempts=2, backoff=FAST, transport=transport
    ) as client:
        yield ChainReader(client)


async def test_header_is_parsed_and_lower_cased() -> None:
    async with fake_reader(lambda m, p: block(int(p[0], 16))) as reader:
        (header,) = await reader.headers(7, 7)
        assert (header.number, header.hash, header.parent_hash, header.timestamp) == (
            7,
            H1.lower(),
            H0,
            100,
        )


@pytest.mark.parametrize(
    "bad",
    [
        block(8),  # not the block asked for
        block(7, hash="0x1234"),
        block(7, parentHash=None),
        block(7, timestamp=100),
        block(7, timestamp="0x_64"),
        block("0x_7"),
        block("seven"),
        "a string",
    ],
)
async def test_bad_headers_are_malformed(bad: Any) -> None:
    async with fake_reader(lambda m, p: bad) as reader:
        with pytest.raises(MalformedResponse):
            await reader.headers(7, 7)


async def test_null_block_is_not_available() -> None:
    async with fake_reader(lambda m, p: "0x9" if m == "eth_blockNumber" else None) as reader:
        with pytest.raises(BlockNotAvailable) as caught:
            await reader.headers(7, 9)
        assert caught.value.block == 7 and caught.value.transient
        assert not isinstance(caught.value, HistoryUnavailable)  # near the head: not yet
        with pytest.raises(BlockNotAvailable):
            await reader.tag_block("finalized")


async def test_a_null_block_far_below_the_head_is_one_the_node_cannot_show() -> None:
    """More than ``recent`` (the chain's reorg window) below the node's head, a block that stays
    ``null`` through the retries is gone (pruned, a snapshot, expired history), not late."""
    head = 7 + 128 + 1
    async with fake_reader(lambda m, p: hex(head) if m == "eth_blockNumber" else None) as reader:
        with pytest.raises(HistoryUnavailable, match="cannot show block 7") as caught:
            await reader.headers(7, 9)
        assert (caught.value.block, caught.value.head, caught.value.transient) == (7, head, False)
        with pytest.raises(HistoryUnavailable):
            await reader.headers_at([7, 100])
        with pytest.raises(BlockNotAvailable) as near:
            await reader.headers(8, 8)  # 128 below the head: still not yet
        assert not isinstance(near.value, HistoryUnavailable)


@pytest.mark.parametrize(
    ("method", "result"),
    [
        ("head", "12"),
        ("head", 12),
        ("head", "0x_1"),  # int("0x_1", 16) == 1: the strict parser refuses it
        ("head", "0x 1"),
        ("head", "0x"),
        ("receipts", {"status": "0x_1"}),
        ("logs", {"not": "a list"}),
        ("blocks", block(1, transactions=None)),
        ("receipts", {"blockNumber": "0x1"}),
    ],
)
async def test_wrong_result_types_are_malformed(method: str, result: Any) -> None:
    async with fake_reader(lambda m, p: result) as reader:
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "head": lambda: reader.head(),
            "logs": lambda: reader.logs(["0x" + "11" * 20], "0x" + "22" * 32, 1, 2),
            "blocks": lambda: reader.blocks_with_transactions(1, 1),
            "receipts": lambda: reader.receipt_statuses(["0x" + "33" * 32]),
        }
        with pytest.raises(MalformedResponse):
            await calls[method]()


async def test_headers_of_a_long_range_come_back_in_order() -> None:
    async with fake_reader(lambda m, p: block(int(p[0], 16))) as reader:
        headers = await reader.headers(1, 250)  # three batches of at most 100
        assert [h.number for h in headers] == list(range(1, 251))
