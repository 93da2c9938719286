"""``verify_urls``: before a payment is confirmed, a second provider confirms each counted
transfer by its receipt. The second provider is the same anvil behind a proxy that can alter one
receipt (a provider that disagrees), forget one (a provider without old receipts) or stop
answering (one that is unreachable). The verifier's wall clock (its backoff) is the test's.
Both databases.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from scanner.config_types import RpcUrl
from scanner.db import payments
from scanner.db import verify as stored
from scanner.scan.verify import RETRY_FIRST, Verifier
from scanner.testkit.gateway import NewPayment, insert_payments
from scanner.testkit.settings import CHAIN
from tests.e2e.actions import mined, pay
from tests.e2e.harness import Harness
from tests.support.metrics import sample
from tests.support.proxy import FaultProxy

ALICE, BOB, CAROL = "0x" + "a1" * 20, "0x" + "b2" * 20, "0x" + "c3" * 20


class ForgingProxy(FaultProxy):
    """Forwards to the node, but answers the receipt of chosen transactions with its Transfer
    log's value raised by one (a provider that disagrees on one transfer), or with ``null`` (a
    provider without old receipts: it disagrees for good)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.forged: set[str] = set()
        self.forgotten: set[str] = set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if (
            isinstance(body, dict)
            and body.get("method") == "eth_getTransactionReceipt"
            and body["params"][0] in self.forged | self.forgotten
            and not self.rules
        ):
            self.counts.update(["eth_getTransactionReceipt"])
            if body["params"][0] in self.forgotten:
                answer = {"jsonrpc": "2.0", "id": body["id"], "result": None}
                return web.Response(body=orjson.dumps(answer), content_type="application/json")
            (answer,) = await self._upstream([body])
            for entry in answer["result"]["logs"]:
                entry["data"] = hex(int(entry["data"], 16) + 1)
            return web.Response(body=orjson.dumps(answer), content_type="application/json")
        return await super()._handle(request)


class Clock:
    """The verifier's wall clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def proxy(h: Harness) -> AsyncIterator[ForgingProxy]:
    async with ForgingProxy(h.chain.url) as forging:
        yield forging


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def verify_through(h: Harness, proxy: ForgingProxy, clock: Clock) -> Verifier:
    """Make ``h`` scan with ``proxy`` as its ``verify_urls`` (a new scanner: a restart)."""
    if h.scanner is not None:
        await h.scanner.reader.client.aclose()
        if h.scanner.verifier is not None:
            await h.scanner.verifier.aclose()
    scanner = h.make_scanner(verify_urls=[RpcUrl(proxy.url)])
    scanner.verifier = Verifier(scanner.settings, h.sessions, metrics=h.metrics, clock=clock)
    await scanner.prepare()
    h.scanner = scanner
    return scanner.verifier


@pytest.fixture
async def verifying(h: Harness, proxy: ForgingProxy, clock: Clock) -> AsyncIterator[Harness]:
    await verify_through(h, proxy, clock)
    try:
        yield h
    finally:
        if h.scanner is not None and h.scanner.verifier is not None:
            await h.scanner.verifier.aclose()


def verification_failures(h: Harness) -> float:
    return sample(h.metrics, "scanner_verification_failed_total", chain=CHAIN)


async def test_agreement_confirms_and_disagreement_holds_the_payment_confirming(
    verifying: Harness, proxy: ForgingProxy, clock: Clock
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

    asked = proxy.count("eth_getTransactionReceipt")
    h.mine(2)  # not asked again before its backoff is over
    await h.scan()
    assert proxy.count("eth_getTransactionReceipt") == asked
    clock.advance(RETRY_FIRST)  # then asked again, and reported once
    h.mine(1)
    await h.scan()
    assert proxy.count("eth_getTransactionReceipt") == asked + 1
    assert [e[0] for e in await h.events(b)].count("verification_failed") == 1
    assert await h.status(b) == "confirming" and verification_failures(h) == 1

    proxy.forged.clear()  # the provider heals: it agrees, and the payment is confirmed
    clock.advance(2 * RETRY_FIRST)  # the backoff doubled
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


async def test_credits_that_disagree_for_good_never_hold_back_a_newer_one(
    verifying: Harness, proxy: ForgingProxy, clock: Clock
) -> None:
    """A provider without old receipts disagrees with more credits than a page holds: each is
    asked again on its own backoff (across a restart too), and a newer credit is verified and
    its payment confirmed meanwhile; no tick asks for more than a page of receipts."""
    h = verifying
    await h.scan()
    many = stored.PAGE + 5
    addresses = ["0x" + f"{n:040x}" for n in range(1, many + 1)]
    token_id, created = await h.token_id(h.token), h.now()
    old = [
        NewPayment(uuid.uuid4(), token_id, CHAIN, a, "1", created + 3600, created)
        for a in addresses
    ]
    async with h.engine.begin() as conn:
        await insert_payments(conn, old)
    batch = h.chain.batch_transfer(h.token, h.customer, addresses, [1_000_000] * many)
    proxy.forgotten.add(mined(h, batch))
    fresh = await h.create_payment(BOB, "7")
    pay(h, BOB, 7_000_000)
    asked: list[int] = []
    for _ in range(6):
        before = proxy.count("eth_getTransactionReceipt"), proxy.count("eth_blockNumber")
        h.mine(1)
        await h.scan()
        asked.append(proxy.count("eth_getTransactionReceipt") - before[0])
        assert proxy.count("eth_blockNumber") - before[1] <= 1  # the verifier's head, once
    assert await h.status(fresh) == "confirmed"
    assert max(asked) <= stored.PAGE and sum(asked) == many + 1  # each asked once, no more
    assert verification_failures(h) == many
    assert {await h.status(str(p.id)) for p in old[:3]} == {"confirming"}

    await verify_through(h, proxy, clock)  # a restart: the schedule is stored
    receipts = proxy.count("eth_getTransactionReceipt")
    h.mine(1)
    await h.scan()
    assert proxy.count("eth_getTransactionReceipt") == receipts
    clock.advance(RETRY_FIRST)  # due again: a page a tick, each reported once only
    h.mine(1)
    await h.scan()
    assert proxy.count("eth_getTransactionReceipt") - receipts == stored.PAGE
    assert verification_failures(h) == many

    proxy.forgotten.clear()  # the provider finds its receipts again: every payment confirmed
    clock.advance(2 * RETRY_FIRST)
    for _ in range(3):
        h.mine(1)
        await h.scan()
    assert {await h.status(str(p.id)) for p in old} == {"confirmed"}


async def test_a_late_credit_is_verified_and_its_payment_no_longer_loaded_every_tick(
    verifying: Harness,
) -> None:
    h = verifying
    await h.scan()
    pid = await h.create_payment(ALICE, "5", expires_in=60)
    h.chain.increase_time(120)
    h.mine(3)
    await h.scan()
    assert await h.status(pid) == "expired"
    with capture_logs() as logs:
        late_tx = pay(h, ALICE, 5_000_000)
        for _ in range(3):
            h.mine(2)
            await h.scan()
    (tx,) = await h.transactions(pid)
    assert (tx["tx_hash"], tx["late"], tx["status"]) == (late_tx, True, "confirmed")
    verified = [e for e in logs if e["event"] == "transfer_verified"]
    assert [e["tx_hash"] for e in verified] == [late_tx]
    async with h.sessions() as session:
        loaded = await payments.to_advance(session, CHAIN, None, lock=False)
    assert pid not in {str(p.key) for p in loaded}  # nothing left to wait for
    assert await h.status(pid) == "expired"
