"""A provider answering malformed shapes stops only its own chain: the other chains go on, the
process stays up, and the chain recovers once the provider answers well again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from scanner.app import App
from scanner.devchain import DevChain
from scanner.testkit.settings import CHAIN, chain_settings
from tests.e2e.actions import pay
from tests.e2e.harness import Harness
from tests.e2e.test_reorg import _chain, _cursor, app_settings
from tests.support.metrics import sample
from tests.support.proxy import FaultProxy
from tests.support.wait import until

ALICE = "0x" + "a1" * 20


@pytest.mark.parametrize(
    ("method", "shape"),
    [
        ("eth_getLogs", [1, "x", None]),
        ("eth_getLogs", ["0x" + "ab" * 32]),  # hashes, as eth_getFilterChanges answers
        ("eth_getTransactionReceipt", ["a receipt"]),
    ],
    ids=["deep-logs-of-scalars", "deep-logs-as-hashes", "verifier-receipt-as-a-list"],
)
async def test_a_provider_answering_malformed_shapes_stops_only_its_own_chain(
    h: Harness, anvil2: DevChain, method: str, shape: Any
) -> None:
    """The bad provider is the chain's node (its logs, read far below the head after a pause)
    or its verifier (a receipt); the other chain's node is healthy."""
    pid = await h.create_payment(ALICE, "3")
    token2 = anvil2.deploy_token("Tether USD", "USDT", 6)
    other = chain_settings(anvil2.url, [("USDT", token2, 6)], name="other", poll_interval=0.02)
    async with FaultProxy(h.chain.url) as proxy:
        bad = chain_settings(
            proxy.url + "/v3/KEY",
            [("USDT", h.token, 6), ("DAI", h.token18, 18)],
            poll_interval=0.02,
            max_reorg_depth=5,
            verify_urls=[proxy.url + "/v3/VERIFYKEY"],
        )
        app = App(app_settings(h.settings, bad, other), environ={})
        task = asyncio.create_task(app.run())

        def failed() -> bool:
            if method == "eth_getTransactionReceipt":
                return sample(app.metrics, "scanner_verification_delayed_total", chain=CHAIN) > 0
            return method in str(_chain(app, CHAIN).get("failing"))

        try:
            await until(
                lambda: task.done() or None not in (_cursor(app, CHAIN), _cursor(app, "other"))
            )
            proxy.answer(method, shape)
            pay(h, ALICE, 3_000_000)
            h.mine(60)  # the logs of the payment are read as a deep range
            await until(lambda: task.done() or failed())
            assert not task.done(), task.exception()

            anvil2.mine(3)  # the other chain goes on scanning
            target = anvil2.head()
            await until(lambda: task.done() or (_cursor(app, "other") or -1) >= target)
            assert not task.done(), task.exception()
            assert await h.status(pid) in ("pending", "confirming")  # not confirmed on garbage

            proxy.reset()  # the provider heals: the chain catches up, the payment is confirmed
            await until(lambda: task.done() or (_cursor(app, CHAIN) or -1) >= h.chain.head())
            await until_confirmed(h, pid, task)
        finally:
            app.stop.set()
            assert await asyncio.wait_for(task, 10) == 0


async def until_confirmed(h: Harness, pid: str, task: asyncio.Task[int]) -> None:
    """Until the payment is confirmed, the app (``task``) running all along."""

    async def confirmed() -> bool:
        assert not task.done(), task.exception()
        return await h.status(pid) == "confirmed"

    await until(confirmed, what="payment confirmed", detail=lambda: h.payment(pid))
