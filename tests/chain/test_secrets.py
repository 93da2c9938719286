"""No API key in any exception message, traceback, repr or log line of the node adapter."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Callable

import pytest

from scanner.chain.reader import ChainReader
from scanner.chain.rpc import RpcClient
from scanner.errors import ConfigError, RpcError
from tests.chain.conftest import FAST, SECRET
from tests.support.proxy import FaultProxy

QUERY_SECRET = "QUERYTOKEN987654"


def leaks(error: BaseException) -> bool:
    text = "".join(traceback.format_exception(error)) + repr(error) + str(error)
    return SECRET in text or QUERY_SECRET in text


def urls(proxy: FaultProxy) -> list[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://user:{SECRET}@127.0.0.1:{sock.getsockname()[1]}/v3/{SECRET}"
    return [dead, f"{proxy.url}/v3/{SECRET}?apikey={QUERY_SECRET}"]


async def failures(client: RpcClient, proxy: FaultProxy) -> list[RpcError]:
    """Provoke every kind of failure; collect the errors."""
    found: list[RpcError] = []
    echo = f"bad key {SECRET} for {proxy.url}/v3/{SECRET}?apikey={QUERY_SECRET}"
    faults: list[Callable[[], object]] = [
        lambda: proxy.fail_http("eth_chainId", 500, body=SECRET.encode()),
        lambda: proxy.fail_http("eth_chainId", 403, body=echo.encode()),
        lambda: proxy.malformed("eth_chainId", body=echo.encode()),
        lambda: proxy.rpc_error("eth_chainId", echo, data={"url": echo}),
        lambda: proxy.rpc_error("eth_chainId", "rate limited " + echo, code=-32005),
        lambda: proxy.delay("eth_chainId", 1.0),
    ]
    for fault in faults:
        proxy.reset()
        fault()
        with pytest.raises(RpcError) as caught:
            await client.call("eth_chainId")
        found.append(caught.value)
    return found


async def test_no_secret_in_errors_reprs_or_logs(
    proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with RpcClient("t", urls(proxy), timeout=0.3, max_attempts=2, backoff=FAST) as client:
        assert SECRET not in repr(client) and SECRET not in repr(ChainReader(client))
        assert await client.call("eth_chainId") == "0x7a69"  # fails over from the dead URL
        errors = await failures(client, proxy)
    assert len(errors) == 6
    assert [e for e in errors if leaks(e)] == []
    assert "127.0.0.1" in str(errors[0])  # the redacted URL is still there to help
    assert SECRET not in caplog.text and QUERY_SECRET not in caplog.text
    assert "HTTP Request" in caplog.text  # httpx did log, redacted


def test_invalid_url_is_a_config_error_without_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        RpcClient("t", [f"ftp://host/{SECRET}"])
    assert SECRET not in str(caught.value)
