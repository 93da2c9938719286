"""``verify_urls``: before a payment is confirmed, a second provider confirms each counted
transfer by its receipt. The second provider is the same anvil behind a proxy that can alter one
receipt (a provider that disagrees) or stop answering (one that is unreachable). Both databases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from scanner.config import RpcUrl
from scanner.scan.verify import Verifier
from tests.e2e.actions import mined, pay
from tests.e2e.harness import Harness
from tests.support.metrics import sample
from tests.support.proxy import FaultProxy
from tests.support.settings import CHAIN

ALICE, BOB, CAROL = "0x" + "a1" * 20, "0x" + "b2" * 20, "0x" + "c3" * 20


class ForgingProxy(FaultProxy):
    """Forwards to the node, but answers the receipt of chosen transactions with its Transfer
    log's value raised by one (a provider that disagrees on one transfer)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.forged: set[str] = set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if (
            isinstance(body, dict)
            and body.get("method") == "eth_getTransactionReceipt"
            and body["params"][0] in self.forged
            and not self.rules
        ):
            (answer,) = await self._upstream([body])
            for entry in answer["result"]["logs"]:
                entry["data"] = hex(int(entry["data"], 16) + 1)
            return web.Response(body=orjson.dumps(answer), content_type="application/json")
        return await super()._handle(request)


@pytest.fixture
async def proxy(h: Harness) -> AsyncIterator[ForgingProxy]:
    async with ForgingProxy(h.chain.url) as forging:
        yield forging


@pytest.fixture
async def verifying(h: Harness, proxy: ForgingProxy) -> AsyncIterator[Harness]:
    scanner = h.make_scanner(verify_urls=[RpcUrl(proxy.url)])
    scanner.verifier = Verifier(scanner.settings, h.sessions, metrics=h.metrics)
    await scanner.prepare()
    h.scanner = scanner
    try:
        yield h
    finally:
        await scanner.verifier.aclose()


def verification_failures(h: Harness) -> float:
    return sample(h.metrics, "scanner_verification_failed_total", chain=CHAIN)


async def test_agreement_confirms_and_disagreement_holds_the_payment_confirming(
    verifying: Harness, proxy: ForgingProxy
) -> None:
    h = verifying
    a, b = await h.create_payment(ALICE, "5"), await h.create_payment(BOB, "7")
    pay(h, ALICE, 5_000_000)
    proxy.forged.add(pay(h, BOB, 7_000_000))
    await h.scan()
    assert (await h.status(a), await h.status(b)) == ("confirming", "confirming")
    h.mine(3)  # both final by their blocks: now the second provider has its say
    with capture_logs() as logs:
        await h.scan()
        h.mine(1)
        await h.scan()
    assert await h.status(a) == "confirmed"
    assert await h.status(b) == "confirming"
    assert (await h.payment(b))["confirmations"] == 3  # final by blocks, not confirmed
    failed = [e for e in logs if e["event"] == "verification_failed"]
    assert len(failed) == 1 and failed[0]["disagrees_on"] == ["value"]
    assert failed[0]["payment_id"] == b and failed[0]["log_level"] == "error"
    assert ("verification_failed", None, None) in await h.events(b)
    assert verification_failures(h) == 1
    (tx,) = await h.transactions(b)
    assert tx["status"] == "pending" and tx["confirmations"] == 3

    h.mine(2)  # asked again every tick, reported once
    await h.scan()
    assert [e[0] for e in await h.events(b)].count("verification_failed") == 1
    assert await h.status(b) == "confirming" and verification_failures(h) == 1

    proxy.forged.clear()  # the provider heals: it agrees, and the payment is confirmed
    h.mine(1)
    await h.scan()
    h.mine(1)
    await h.scan()
    assert await h.status(b) == "confirmed"
    assert ("status_changed", "confirming", "confirmed") in await h.events(b)


async def test_an_unreachable_verifier_delays_confirmation_and_never_skips_it(
    verifying: Harness, proxy: ForgingProxy
) -> None:
    h = verifying
    native = await h.create_payment(CAROL, "0.5", token=False)
    mined(h, h.chain.send_eth(h.customer, CAROL, 5 * 10**17))
    proxy.fail_http("eth_getTransactionReceipt", 503)  # until reset
    h.mine(4)
    with capture_logs() as logs:
        for _ in range(3):
            await h.scan()
            h.mine(1)
    assert await h.status(native) == "confirming"
    assert any(e["event"] == "verification_delayed" for e in logs)
    assert sample(h.metrics, "scanner_verification_delayed_total", chain=CHAIN) >= 1

    proxy.reset()
    await h.scan()
    h.mine(1)
    await h.scan()
    assert await h.status(native) == "confirmed"
    assert "verification_failed" not in [e[0] for e in await h.events(native)]
