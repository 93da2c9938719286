"""What the customer does in scenario tests, waiting until the node has mined it.

anvil's automine answers ``eth_sendTransaction`` before the block exists now and then (about one
send in twenty here), so a scan started right after a send can miss the block: every send in a
scenario waits for its receipt first.
"""

from __future__ import annotations

from sqlalchemy import text

from scanner.testkit.settings import CHAIN
from tests.e2e.harness import Harness
from tests.support.metrics import sample


def mined(h: Harness, tx_hash: str) -> str:
    """``tx_hash``, once its receipt exists (automine on)."""
    h.chain.wait_receipt(tx_hash)
    return tx_hash


def pay(h: Harness, to: str, value: int, token: str | None = None) -> str:
    """The customer sends ``value`` base units of ``token`` (default: the 6-decimal one)."""
    return mined(h, h.chain.transfer(token or h.token, h.customer, to, value))


def skipped(h: Harness, reason: str) -> float:
    """``scanner_skipped_logs_total`` for ``reason`` on the test chain (absent: a failure)."""
    return sample(h.metrics, "scanner_skipped_logs_total", chain=CHAIN, reason=reason)


async def looked_at(h: Harness) -> None:
    """The payments as the look at unseen payments leaves them, before any transfer: that look
    runs beside the live scan and reads the blocks since a payment was written a second time,
    so a test of what one read does (a log it left out, the logs it counted as skipped) must
    not race it."""
    async with h.engine.begin() as conn:
        await conn.execute(
            text("UPDATE payments SET seen_at_block = :b WHERE seen_at_block IS NULL"),
            {"b": h.chain.head()},
        )
