"""An empty eth_getLogs answer is checked against the blocks' receipts (java-tron #4447, #6037,
#6384: logs missing from the bloom index, or from a node restored from a snapshot, are still
in the receipts), on both databases."""

from __future__ import annotations

from decimal import Decimal

from structlog.testing import capture_logs

from tests.tron.conftest import TronHarness, customer


def missed(th: TronHarness) -> float:
    value = th.metrics.registry.get_sample_value("scanner_logs_missed_total", {"chain": "tron"})
    return value or 0.0


async def test_a_log_the_node_hid_from_get_logs_is_credited_from_the_block_receipts(
    th: TronHarness,
) -> None:
    # TronJsonRpcImpl.getBlockReceipts: the receipts hold the logs eth_getLogs left out
    hex20, base58 = customer(40)
    payment = await th.create_payment(base58, "5")
    tx = th.pay(hex20, 5_000_000)
    assert th.node is not None
    th.node.rpc("sim_hideLogs", [tx])
    with capture_logs() as logs:
        await th.scan()
    row = await th.payment(payment)
    assert (row["status"], row["amount_received"]) == ("confirming", Decimal("5"))
    assert [t["tx_hash"] for t in await th.transactions(payment)] == [tx]
    told = [e for e in logs if e["event"] == "logs_missed"]
    assert [(e["source"], e["tx_hash"]) for e in told] == [("receipts", tx)]
    assert missed(th) == 1
    th.mine(18)
    await th.scan()
    assert await th.status(payment) == "confirmed"
    assert missed(th) == 1  # told once: later ranges do not hold it


async def test_without_block_receipts_each_transactions_receipt_is_read(th: TronHarness) -> None:
    # eth_getBlockReceipts answered -32601 (a node or proxy without it): per transaction,
    # eth_getTransactionReceipt (TronJsonRpcImpl.getTransactionReceipt)
    hex20, base58 = customer(41)
    payment = await th.create_payment(base58, "2")
    assert th.node is not None
    th.node.rpc("sim_disable", ["eth_getBlockReceipts"])
    tx = th.pay(hex20, 2_000_000)
    th.node.rpc("sim_hideLogs", [tx])
    await th.scan()
    assert (await th.payment(payment))["amount_received"] == Decimal("2")
    assert missed(th) == 1


async def test_a_failed_call_to_the_token_is_read_in_the_receipts_and_credits_nothing(
    th: TronHarness,
) -> None:
    # TransactionReceipt: status 0x0 for a failed call; java-tron keeps no log for it
    hex20, base58 = customer(42)
    payment = await th.create_payment(base58, "2")
    th.pay(hex20, 2_000_000, success=False)
    await th.scan()
    row = await th.payment(payment)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("0"))
    assert missed(th) == 0


async def test_logs_the_node_answered_are_not_counted_as_missed(th: TronHarness) -> None:
    hex20, base58 = customer(43)
    payment = await th.create_payment(base58, "3")
    th.pay(hex20, 3_000_000)
    await th.scan()
    assert (await th.payment(payment))["amount_received"] == Decimal("3")
    assert missed(th) == 0
