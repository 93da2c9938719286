"""RpcClient against a real anvil behind the fault-injecting proxy: retries, failover, errors.

Retry policy under test (see scanner/chain/rpc.py): transient errors (transport, HTTP 5xx,
dropped connections, timeouts, rate limits, blocks not yet available) are retried up to
``max_attempts`` with backoff; JSON-RPC errors and malformed answers are not retried.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from scanner.chain.reader import ChainReader
from scanner.chain.rpc import RpcClient
from scanner.core.decode import TRANSFER_TOPIC
from scanner.errors import (
    MalformedResponse,
    RangeTooLarge,
    RpcRateLimited,
    RpcResponseError,
    RpcTransportError,
)
from tests.chain.conftest import FAST, Recorder, keyed
from tests.support.proxy import FaultProxy

TOKEN = "0x5fbdb2315678afecb367f032d93f642f64180aa3"


def dead_url() -> str:
    """A URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return keyed(f"http://127.0.0.1:{port}")


async def test_call_and_batch(client: RpcClient, proxy: FaultProxy) -> None:
    assert await client.call("eth_chainId") == "0x7a69"
    results = await client.batch(
        [("eth_chainId", []), ("eth_blockNumber", []), ("net_version", [])]
    )
    assert results == ["0x7a69", "0x0", "31337"]
    assert proxy.http_requests == 2


async def test_large_batches_are_chunked(proxy: FaultProxy) -> None:
    async with RpcClient("t", [proxy.url], batch_size=7, backoff=FAST) as client:
        results = await client.batch([("eth_chainId", [])] * 20)
    assert results == ["0x7a69"] * 20
    assert proxy.http_requests == 3
    assert proxy.count("eth_chainId") == 20


async def test_empty_batch_sends_nothing(client: RpcClient, proxy: FaultProxy) -> None:
    assert await client.batch([]) == []
    assert proxy.http_requests == 0


async def test_http_500_is_retried_then_succeeds(
    client: RpcClient, proxy: FaultProxy, recorder: Recorder
) -> None:
    proxy.fail_http("eth_blockNumber", 500, times=2)
    assert await client.call("eth_blockNumber") == "0x0"
    assert proxy.count("eth_blockNumber") == 3
    assert recorder.outcomes == ["transport_error", "transport_error", "ok"]
    assert [(r[1], r[2]) for r in recorder.retries] == [
        ("eth_blockNumber", 1),
        ("eth_blockNumber", 2),
    ]
    assert all(isinstance(r[3], RpcTransportError) for r in recorder.retries)


async def test_attempts_are_bounded(client: RpcClient, proxy: FaultProxy) -> None:
    proxy.fail_http("eth_blockNumber", 503)
    with pytest.raises(RpcTransportError, match="HTTP 503"):
        await client.call("eth_blockNumber")
    assert proxy.count("eth_blockNumber") == 4  # max_attempts


async def test_dropped_connection_is_retried(client: RpcClient, proxy: FaultProxy) -> None:
    proxy.drop("eth_chainId", times=1)
    assert await client.call("eth_chainId") == "0x7a69"
    assert proxy.count("eth_chainId") == 2


async def test_timeout_is_a_transport_error(proxy: FaultProxy, recorder: Recorder) -> None:
    proxy.delay("eth_chainId", 1.0)
    async with RpcClient(
        "t", [keyed(proxy.url)], timeout=0.1, max_attempts=2, observer=recorder, backoff=FAST
    ) as client:
        with pytest.raises(RpcTransportError, match=r"no whole answer within 0\.1 s"):
            await client.call("eth_chainId")
    assert recorder.outcomes == ["transport_error", "transport_error"]


async def test_429_retry_after_is_honoured(
    client: RpcClient, proxy: FaultProxy, recorder: Recorder
) -> None:
    proxy.rate_limit("eth_chainId", retry_after="1", times=1)
    started = time.monotonic()
    assert await client.call("eth_chainId") == "0x7a69"
    assert time.monotonic() - started >= 1.0
    (error,) = [r[3] for r in recorder.retries]
    assert isinstance(error, RpcRateLimited) and error.retry_after == 1.0


async def test_json_rpc_rate_limit_waits_for_backoff_seconds(
    client: RpcClient, proxy: FaultProxy
) -> None:
    proxy.rpc_error(
        "eth_chainId",
        "project ID request rate exceeded",
        code=-32005,
        data={"backoff_seconds": 0.3},
        times=1,
    )
    started = time.monotonic()
    assert await client.call("eth_chainId") == "0x7a69"
    assert time.monotonic() - started >= 0.3


async def test_malformed_json_is_not_retried(
    client: RpcClient, proxy: FaultProxy, recorder: Recorder
) -> None:
    """Decided: a 200 answer that is not JSON-RPC is not transient (a wrong URL, a broken
    gateway): retrying repeats it and burns quota. It surfaces at once; the scan loop's next
    tick tries again."""
    proxy.malformed("eth_chainId")
    with pytest.raises(MalformedResponse, match="not JSON"):
        await client.call("eth_chainId")
    assert proxy.count("eth_chainId") == 1
    assert recorder.outcomes == ["not_json"] and recorder.retries == []


@pytest.mark.parametrize(
    "body",
    [b'{"jsonrpc":"1.0","id":1,"result":"0x1"}', b'{"jsonrpc":"2.0","id":1}', b"[]", b"42"],
)
async def test_wrong_json_rpc_shape_is_malformed(
    client: RpcClient, proxy: FaultProxy, body: bytes
) -> None:
    proxy.malformed("eth_chainId", body=body)
    with pytest.raises(MalformedResponse):
        await client.call("eth_chainId")


async def test_json_rpc_error_is_not_retried(client: RpcClient, proxy: FaultProxy) -> None:
    proxy.rpc_error("eth_chainId", "internal trouble", code=-32603, data="details")
    with pytest.raises(RpcResponseError) as caught:
        await client.call("eth_chainId")
    assert (caught.value.code, caught.value.data, caught.value.method) == (
        -32603,
        "details",
        "eth_chainId",
    )
    assert proxy.count("eth_chainId") == 1


async def test_range_cap_raises_range_too_large_with_size(
    reader: ChainReader, proxy: FaultProxy
) -> None:
    proxy.cap_logs_range(100)
    assert await reader.logs([TOKEN], TRANSFER_TOPIC, 0, 0) == []  # within the cap
    with pytest.raises(RangeTooLarge) as caught:
        await reader.logs([TOKEN], TRANSFER_TOPIC, 0, 499)
    assert caught.value.suggested_size == 100
    assert proxy.count("eth_getLogs") == 2  # not retried


async def test_range_message_in_error_data(reader: ChainReader, proxy: FaultProxy) -> None:
    proxy.cap_logs_range(
        10,
        message="query returned more than 10000 results. Try with this block range "
        "[{ok_start_hex}, {ok_end_hex}].",
        code=-32005,
        in_data=True,
    )
    with pytest.raises(RangeTooLarge) as caught:
        await reader.logs([TOKEN], TRANSFER_TOPIC, 0, 63)
    assert caught.value.suggested_size == 10


async def test_failover_to_the_second_url(proxy: FaultProxy, recorder: Recorder) -> None:
    async with RpcClient(
        "t", [dead_url(), keyed(proxy.url)], max_attempts=3, observer=recorder, backoff=FAST
    ) as client:
        assert await client.call("eth_chainId") == "0x7a69"
        assert await client.call("eth_chainId") == "0x7a69"  # stays on the good URL
    assert recorder.outcomes == ["transport_error", "ok", "ok"]
    assert "ConnectError" in str(recorder.retries[0][3])
    assert proxy.count("eth_chainId") == 2


async def test_all_urls_dead(recorder: Recorder) -> None:
    async with RpcClient(
        "t", [dead_url(), dead_url()], max_attempts=3, observer=recorder, backoff=FAST
    ) as client:
        with pytest.raises(RpcTransportError, match="ConnectError"):
            await client.call("eth_chainId")
    assert recorder.outcomes == ["transport_error"] * 3


async def test_batch_item_error_raises_for_the_batch(client: RpcClient, proxy: FaultProxy) -> None:
    proxy.rpc_error("eth_blockNumber", "boom", code=-32603, times=1)
    with pytest.raises(RpcResponseError, match="boom"):
        await client.batch([("eth_chainId", []), ("eth_blockNumber", [])])


async def test_rate_limited_batch_item_retries_the_chunk(
    client: RpcClient, proxy: FaultProxy
) -> None:
    proxy.rpc_error("eth_blockNumber", "Too many requests", code=-32016, times=1)
    assert await client.batch([("eth_chainId", []), ("eth_blockNumber", [])]) == ["0x7a69", "0x0"]
    assert proxy.http_requests == 2


async def test_stop_mid_batch_leaves_the_client_usable(
    reader: ChainReader, proxy: FaultProxy
) -> None:
    """Force the race: hold a header batch in the proxy, cancel the caller, release."""
    gate = proxy.hold("eth_getBlockByNumber")
    task = asyncio.create_task(reader.headers(0, 0))
    async with asyncio.timeout(10):
        await gate.wait_reached()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.release()
    (header,) = await reader.headers(0, 0)
    assert header.number == 0
    assert gate.hits == 1


async def test_a_batch_waits_off_its_deadline_for_what_its_parse_needs(
    proxy: FaultProxy, recorder: Recorder
) -> None:
    """``ready`` is awaited once the answer is in and before it is parsed; the wait is not the
    node's time: longer than ``rpc_timeout`` (with the node's own delay besides), it fails
    nothing and retries nothing, and the deadline still holds for the node."""
    proxy.delay("eth_chainId", 0.1, times=1)
    made: list[str] = []

    async def ready() -> None:
        await asyncio.sleep(0.4)
        made.append("ready")

    def parse(index: int, value: object) -> object:
        made.append(f"parse {index}")
        return value

    async with RpcClient(
        "t", [keyed(proxy.url)], timeout=0.25, max_attempts=1, observer=recorder, backoff=FAST
    ) as client:
        results = await client.batch([("eth_chainId", [])], parse=parse, ready=ready)
        assert results == ["0x7a69"] and made == ["ready", "parse 0"]
        assert recorder.outcomes == ["ok"] and proxy.count("eth_chainId") == 1
        proxy.delay("eth_chainId", 1.0)
        with pytest.raises(RpcTransportError, match=r"no whole answer within 0\.25 s"):
            await client.batch([("eth_chainId", [])], parse=parse, ready=ready)
