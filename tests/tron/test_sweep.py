"""The sweep on TRON (both databases): java-tron answers ``eth_getLogs`` without logs that
exist; once final, the blocks are read again and the transfer is credited to a payment the
gateway wrote in base58."""

from __future__ import annotations

from decimal import Decimal

from structlog.testing import capture_logs

from scanner.config_types import RpcUrl
from scanner.scan.sweep import Sweep
from tests.support.metrics import sample
from tests.support.proxy import FaultProxy
from tests.tron.conftest import EXCHANGE, TronHarness, customer


async def test_a_transfer_the_first_read_left_out_is_swept_to_a_base58_payment(
    th: TronHarness,
) -> None:
    assert th.node is not None
    async with FaultProxy(th.node.url) as proxy:
        scanner = th.make_scanner(rpc_urls=[RpcUrl(proxy.url)], sweep_blocks=1)
        scanner.sweep = Sweep(scanner.settings, scanner.reader, th.sessions, metrics=th.metrics)
        await scanner.prepare()
        th.scanner = scanner
        hex20, base58 = customer(1)
        payment = await th.create_payment(base58, "25")
        # made by a contract (an exchange's withdrawal): no transaction to the token, so the
        # live scan's receipts cross-check has nothing to look at; the sweep is the net
        hidden = th.pay(hex20, 25_000_000, via=EXCHANGE)
        mined = th.node.head()
        proxy.hide_log(hidden)
        await th.scan()
        assert await th.status(payment) == "pending"

        th.mine(18)  # solidified (head - 18): final, swept
        with capture_logs() as logs:
            await th.scan()
        row = await th.payment(payment)
        assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("25"))
        [credit] = await th.transactions(payment)
        assert (credit["block_number"], credit["status"]) == (mined, "confirmed")
        [found] = [e for e in logs if e["event"] == "logs_missed"]
        assert found["tx_hash"] == hidden.lower() and found["payment_id"] == payment
        assert sample(th.metrics, "scanner_logs_missed_total", chain="tron") == 1
