"""A provider's rate, budgeted per URL (``rpc_max_rps``), its key sent as a header of that URL
alone, and a provider backing off slowing its own chain only."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from structlog.testing import capture_logs

from scanner.chain.budget import Budget
from scanner.chain.reader import ChainReader
from scanner.devchain.tron import TronNode
from scanner.errors import MalformedResponse
from scanner.observe.metrics import Metrics
from scanner.testkit.settings import settings_from
from tests.e2e.harness import Harness
from tests.tron.conftest import TronHarness, customer, tron_settings

KEY = "0f5a9c1e-7b7d-4f5e-9b1a-5e6d2c3b4a59"


def test_a_budget_spaces_its_slots() -> None:
    budget = Budget(10)
    waits = [budget.reserve() for _ in range(5)]
    assert waits[0] == 0
    assert waits[4] == pytest.approx(0.4, abs=0.02)


async def test_requests_are_paced_before_the_provider_refuses_them() -> None:
    # RateLimiterServlet: past its rate java-tron answers {"Error": "... lack of computing
    # resources"}; TronGrid allows about 15 a second per key
    with TronNode.start(blocks=3, ready_timeout=60.0) as node:
        node.rpc("sim_rateLimit", [8])
        metrics = Metrics()
        reader = ChainReader.from_settings(tron_settings(node.url, rpc_max_rps=5.0), metrics)
        started = time.monotonic()
        try:
            heads = [await reader.head() for _ in range(12)]
        finally:
            await reader.client.aclose()
        seconds = time.monotonic() - started
    assert heads == [3] * 12
    assert seconds >= 11 / 5 - 0.1  # 12 requests, 5 a second
    busy = {"chain": "tron", "method": "eth_blockNumber", "outcome": "node_busy"}
    assert metrics.registry.get_sample_value("scanner_rpc_requests_total", busy) is None


async def test_a_providers_key_goes_in_its_header_and_is_never_shown() -> None:
    # TronGrid: the API key in the TRON-PRO-API-KEY header
    with TronNode.start(blocks=3, ready_timeout=60.0) as node:
        node.rpc("sim_apiKey", [KEY])
        keyed = tron_settings(node.url, rpc_headers={node.url: {"TRON-PRO-API-KEY": KEY}})
        bare = tron_settings(node.url, rpc_max_attempts=1)
        with_key = ChainReader.from_settings(keyed, None)
        without = ChainReader.from_settings(bare, None)
        try:
            assert await with_key.head() == 3
            with capture_logs() as logs, pytest.raises(MalformedResponse) as refused:
                await without.head()
        finally:
            await with_key.client.aclose()
            await without.client.aclose()
    assert KEY not in str(keyed) + repr(keyed) + str(refused.value) + str(logs)
    settings = settings_from("sqlite+aiosqlite://").model_copy(update={"chains": [keyed]})
    assert KEY in settings.secrets()  # scrubbed from free text like the URLs


def test_headers_name_a_configured_url() -> None:
    with pytest.raises(ValueError, match="not one of rpc_urls"):
        tron_settings("http://a/jsonrpc", rpc_headers={"http://b/jsonrpc": {"K": "v"}})


async def test_a_rate_limited_provider_slows_only_its_own_chain(
    th: TronHarness,
    h: Harness,
) -> None:
    # RateLimiterServlet: java-tron refusing for lack of computing resources, the TRON chain
    # backs off; the anvil chain beside it credits its payment meanwhile
    assert th.node is not None
    await th.scan()
    hex20, base58 = customer(50)
    tron_payment = await th.create_payment(base58, "1")
    th.pay(hex20, 1_000_000)
    th.node.rpc("sim_rateLimit", [0.5])
    alice = "0x" + "a1" * 20
    evm_payment = await h.create_payment(alice, "3")
    tron = asyncio.create_task(th.scan())
    try:
        h.chain.transfer(h.token, h.customer, alice, 3_000_000)
        await asyncio.wait_for(h.scan(), timeout=30)
        assert (await h.payment(evm_payment))["amount_received"] == Decimal("3")
        assert not tron.done()  # still backing off
    finally:
        th.node.rpc("sim_rateLimit", [None])
    await asyncio.wait_for(tron, timeout=60)
    assert (await th.payment(tron_payment))["amount_received"] == Decimal("1")
