"""java-tron's JSON-RPC differences, met by the scanner's reader and range sizer against the
simulator: each test names the java-tron source of the rule it checks."""

from __future__ import annotations

from decimal import Decimal

import pytest

from scanner.chain.jsonrpc import Where, result_of
from scanner.chain.limits import classify_range_error
from scanner.chain.reader import ChainReader
from scanner.chain.rpc import RpcClient
from scanner.core.ranges import RangeSizer
from scanner.devchain.tron import RATE_LIMITED, TronNode
from scanner.errors import MalformedResponse, RpcNodeBusy, RpcResponseError
from scanner.observe.metrics import Metrics
from scanner.scan.backfill import Backfill
from scanner.scan.fetch import fetch_logs
from scanner.scan.parts import ChainParts
from tests.tron.conftest import SENDER, USDT_HEX, TronHarness, customer, tron_settings

WHERE = Where("tron", "eth_blockNumber", "http://node/***", lambda s: s)


def test_the_rate_limiters_body_is_a_rate_limit_not_a_malformed_answer() -> None:
    # RateLimiterServlet: HTTP 200 with {"Error": "class java.lang.IllegalAccessException :
    # lack of computing resources"} (no jsonrpc, id or error)
    with pytest.raises(RpcNodeBusy) as caught:
        result_of(RATE_LIMITED, WHERE, [])
    assert caught.value.transient
    with pytest.raises(MalformedResponse):  # any other stray object stays malformed
        result_of({"Error": "something else"}, WHERE, [])


def test_the_range_limits_messages_size_the_range() -> None:
    # LogFilterWrapper: -32602 "exceed max block range: 5000"; LogBlockQuery.MAX_RESULT:
    # -32005 "query returned more than 10000 results"
    refused = classify_range_error(-32602, "exceed max block range: 5000", "{}", 10_000)
    assert refused is not None and refused.suggested_size == 5_000
    many = classify_range_error(-32005, "query returned more than 10000 results", "{}", 800)
    assert many is not None and many.suggested_size is None  # halved


async def test_a_limited_node_is_retried_and_counted_under_its_own_label() -> None:
    # RateLimiterServlet answers HTTP 200: the call still succeeds after backoff
    with TronNode.start(blocks=3, ready_timeout=60.0) as node:
        node.rpc("sim_rateLimit", [2])
        metrics = Metrics()
        reader = ChainReader.from_settings(tron_settings(node.url, rpc_max_attempts=30), metrics)
        try:
            heads = [await reader.head() for _ in range(6)]
        finally:
            await reader.client.aclose()
    assert heads == [3] * 6
    busy = {"chain": "tron", "method": "eth_blockNumber", "outcome": "node_busy"}
    assert (metrics.registry.get_sample_value("scanner_rpc_requests_total", busy) or 0) >= 1


async def test_batches_hold_at_most_100_requests() -> None:
    # java-tron v4.8.2 release notes, item 8 (PR #6728): more than 100 requests in a batch are
    # refused with one -32005 object
    with TronNode.start(blocks=250, ready_timeout=60.0) as node:
        reader = ChainReader.from_settings(tron_settings(node.url), None)
        wide = ChainReader(RpcClient("tron", [node.url], max_attempts=1, batch_size=250))
        try:
            headers = await reader.headers(1, 250)
            with pytest.raises(RpcResponseError, match="Batch size"):
                await wide.headers(1, 250)
        finally:
            await reader.client.aclose()
            await wide.client.aclose()
    assert [h.number for h in headers] == list(range(1, 251))
    assert all(h.hash.startswith("0x" + f"{h.number:016x}") for h in headers)  # BlockIds


async def test_a_backfill_of_12000_blocks_crosses_the_5000_block_limit(th: TronHarness) -> None:
    # LogFilterWrapper: min(toBlock, head) - fromBlock > 5000 -> -32602 exceed max block
    # range: 5000; the address filter is sent as 20-byte hex (JsonRpcApiUtil.addressToByteArray
    # refuses base58 and 41-hex), though the token is configured in base58
    assert th.node is not None
    await th.scan()  # the tokens rows
    start = th.node.head() + 1
    owners = [customer(n) for n in (21, 22, 23)]
    ids = [await th.create_payment(b58, "1", expires_in=10**6) for _, b58 in owners]
    for (hex20, _), gap in zip(owners, (100, 5_400, 6_600), strict=True):
        th.node.transfer(USDT_HEX, SENDER, hex20, 1_000_000)
        th.node.mine(gap)
    end = th.node.head() - 20
    assert end - start + 1 >= 12_000
    metrics = Metrics()
    chain = th.chain_settings.model_copy(update={"batch_size": 12_000})
    reader = ChainReader.from_settings(chain, metrics)
    try:
        parts = ChainParts(chain, reader, th.sessions, metrics=metrics)
        summary = await Backfill(parts).run(start, end)
    finally:
        await reader.client.aclose()
    assert summary.to_block == end
    for payment in ids:
        row = await th.payment(payment)
        assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("1"))


async def test_a_range_the_node_refuses_as_too_wide_is_read_in_pieces_it_takes() -> None:
    # LogFilterWrapper: -32602 "exceed max block range: 5000" names the size that works
    with TronNode.start(blocks=2, ready_timeout=60.0) as node:
        paid = [customer(n)[0] for n in (31, 32)]
        for hex20, gap in zip(paid, (6_000, 6_100), strict=True):
            node.transfer(USDT_HEX, SENDER, hex20, 1_000_000)
            node.mine(gap)
        metrics = Metrics()
        reader = ChainReader.from_settings(tron_settings(node.url), metrics)
        sizer = RangeSizer(12_000)
        try:
            logs = await fetch_logs(reader, [USDT_HEX], 1, 12_000, sizer, split=1)
        finally:
            await reader.client.aclose()
    assert [int(log["blockNumber"], 16) for log in logs] == [3, 6_003]
    assert sizer.size <= 5_000
    refused = {"chain": "tron", "method": "eth_getLogs", "outcome": "range_too_large"}
    assert metrics.registry.get_sample_value("scanner_rpc_requests_total", refused) == 1
