"""Webhooks of a TRON chain's payment (both databases): the events of a TRC-20 payment written
in base58, from detection to the solidified block, signed and in order."""

from __future__ import annotations

from scanner.deliver.worker import DeliveryWorker
from tests.deliver.support import Receiver, drive, hook
from tests.tron.conftest import TronHarness, customer


async def test_a_tron_payments_events_are_delivered(th: TronHarness, receiver: Receiver) -> None:
    # DposService.updateSolidBlock: confirmed at the solidified block (head - 18)
    await th.scan()  # the tables' rows
    worker = DeliveryWorker([hook(receiver.url())], th.sessions, poll_interval=0.05)
    await worker.prepare()  # an endpoint receives the events written from now on
    hex20, base58 = customer(70)
    payment = await th.create_payment(base58, "12.5")
    tx = th.pay(hex20, 12_500_000)
    await th.scan()  # confirming
    th.mine(18)
    await th.scan()  # solidified: confirmed
    await drive(worker, lambda: len(receiver.requests) >= 3, engine=th.engine)
    bodies = [r.json for r in receiver.requests]
    assert all(r.verified() for r in receiver.requests)
    assert [(b["type"], b["payment_id"], b["chain"]) for b in bodies] == [
        ("transfer_detected", payment, "tron"),
        ("status_changed", payment, "tron"),
        ("status_changed", payment, "tron"),
    ]
    assert (bodies[0]["tx_hash"], bodies[0]["data"]["amount"]) == (tx, "12.500000")
    assert [(b["status_from"], b["status_to"]) for b in bodies[1:]] == [
        ("pending", "confirming"),
        ("confirming", "confirmed"),
    ]
    assert bodies[-1]["amount_received"] == "12.500000"
