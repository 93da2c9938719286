"""Matching scenarios (docs/design.md, "Matching") against a real node, real ERC-20s and both
databases: partial, over- and underpayments, case-insensitive addresses, look-alike tokens,
batched transfers, several payments on one address, the created-at cut-off, wrong-shaped logs."""

from __future__ import annotations

from decimal import Decimal

from eth_utils.address import to_checksum_address

from scanner.testkit.settings import chain_settings
from tests.e2e.actions import looked_at, mined, pay, skipped
from tests.e2e.harness import Harness
from tests.support.devchain import deploy_odd_emitter, emit_721, emit_long_data

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
CAROL = "0x" + "c3" * 20
DAVE = "0x" + "d4" * 20
MIXED = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"  # EIP-55: 0x5aAeb6053F3E94C9b9A0…
GRACE = 300


async def test_two_partial_transfers_complete_a_payment(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "10")
    first = pay(h, ALICE, 3_250_000)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("3.25"))
    first_block = row["detected_in_block"]
    second = pay(h, ALICE, 6_750_000)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("confirming", Decimal("10"))
    assert row["detected_in_block"] == first_block
    h.mine(2)
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("10"))
    txs = await h.transactions(pid)
    assert [(t["tx_hash"], t["value"], Decimal(str(t["amount"]))) for t in txs] == [
        (first, 3_250_000, Decimal("3.25")),
        (second, 6_750_000, Decimal("6.75")),
    ]
    assert all(t["status"] == "confirmed" and not t["late"] for t in txs)
    assert await h.events(pid) == [
        ("transfer_detected", None, None),
        ("transfer_detected", None, None),
        ("status_changed", "pending", "confirming"),
        ("status_changed", "confirming", "confirmed"),
    ]


async def test_overpayment_is_credited_whole_and_visible(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "25")
    pay(h, ALICE, 30_000_001)
    h.mine(2)
    await h.scan()
    row = await h.payment(pid)
    assert row["status"] == "confirmed"
    assert row["amount_received"] == Decimal("30.000001")
    assert row["amount_received"] - row["amount"] == Decimal("5.000001")
    (tx,) = await h.transactions(pid)
    assert (tx["value"], Decimal(str(tx["amount"]))) == (30_000_001, Decimal("30.000001"))


async def test_underpayment_expires_with_what_arrived(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "10", expires_in=600)
    pay(h, ALICE, 9_999_999)
    await h.scan()
    assert (await h.payment(pid))["amount_received"] == Decimal("9.999999")
    h.chain.increase_time(3600)
    h.mine(3)  # the first block past expires_at, and two on top of it: final
    await h.scan()
    row = await h.payment(pid)
    assert row["status"] == "expired"
    assert 0 < row["amount_received"] < row["amount"]
    assert row["amount_received"] == Decimal("9.999999")
    assert await h.events(pid) == [
        ("transfer_detected", None, None),
        ("status_changed", "pending", "expired"),
    ]


async def test_checksummed_and_upper_case_addresses_match(h: Harness) -> None:
    checksummed = to_checksum_address(MIXED)
    assert checksummed != MIXED and checksummed != MIXED.upper()
    by_checksum = await h.create_payment(checksummed, "5")
    upper = await h.create_payment("0x" + BOB[2:].upper(), "7", token=h.token18)
    pay(h, MIXED, 5_000_000)
    pay(h, BOB, 7 * 10**18, h.token18)
    h.mine(2)
    await h.scan()
    for pid, amount in ((by_checksum, Decimal("5")), (upper, Decimal("7"))):
        row = await h.payment(pid)
        assert (row["status"], row["amount_received"]) == ("confirmed", amount)
    (tx,) = await h.transactions(by_checksum)
    assert tx["value"] == 5_000_000


async def test_look_alike_token_with_the_same_symbol_pays_nothing(h: Harness) -> None:
    fake = h.chain.deploy_token("Tether USD", "USDT", 6)
    mined(h, h.chain.mint(fake, h.customer, 10**12))
    pid = await h.create_payment(ALICE, "25")
    pay(h, ALICE, 25_000_000, fake)
    h.mine(3)
    await h.scan()
    assert await h.status(pid) == "pending"
    assert (await h.payment(pid))["amount_received"] == 0
    assert await h.transactions() == []
    assert await h.events(pid) == []
    real = pay(h, ALICE, 25_000_000)
    await h.scan()
    assert await h.status(pid) == "confirming"
    assert [t["tx_hash"] for t in await h.transactions()] == [real]


async def test_one_batch_transaction_credits_each_payment(h: Harness) -> None:
    start = h.now()
    pids = [
        await h.create_payment(ALICE, "4", created_at=start - 2),
        await h.create_payment(BOB, "2.5", created_at=start - 1),
        await h.create_payment(CAROL, "3", created_at=start),
        await h.create_payment(ALICE, "1", created_at=start),
    ]
    recipients = [ALICE, DAVE, BOB, CAROL, ALICE]  # DAVE has no payment
    values = [1_000_000, 9_000_000, 2_500_000, 1_000_000, 4_000_000]
    tx = mined(h, h.chain.batch_transfer(h.token, h.customer, recipients, values))
    h.mine(2)
    await h.scan()
    rows = [await h.payment(pid) for pid in pids]
    assert [(r["status"], r["amount_received"]) for r in rows] == [
        ("confirmed", Decimal("4")),
        ("confirmed", Decimal("2.5")),
        ("pending", Decimal("1")),
        ("confirmed", Decimal("1")),  # each ALICE payment got its exact amount
    ]
    txs = await h.transactions()  # DAVE's transfer is not stored
    assert [t["tx_hash"] for t in txs] == [tx] * 4
    assert [t["log_index"] for t in txs] == [0, 2, 3, 4]
    assert [t["payment_id"] for t in txs] == [pids[3], pids[1], pids[2], pids[0]]
    assert [t["value"] for t in txs] == [1_000_000, 2_500_000, 1_000_000, 4_000_000]
    for pid in pids:
        assert (await h.events(pid))[0] == ("transfer_detected", None, None)


async def test_two_payments_on_one_address_paid_in_reverse_order_get_their_exact_amounts(
    h: Harness,
) -> None:
    older = await h.create_payment(ALICE, "10", created_at=h.now() - 60)
    newer = await h.create_payment(ALICE, "25")
    second_paid = pay(h, ALICE, 25_000_000)
    await h.scan()
    # the oldest pending would take it under rule 2: the exact outstanding amount wins first
    assert (await h.payment(older))["amount_received"] == 0
    assert (await h.payment(newer))["amount_received"] == Decimal("25")
    first_paid = pay(h, ALICE, 10_000_000)
    h.mine(2)
    await h.scan()
    for pid, amount, tx in ((older, "10", first_paid), (newer, "25", second_paid)):
        row = await h.payment(pid)
        assert (row["status"], row["amount_received"]) == ("confirmed", Decimal(amount))
        assert [t["tx_hash"] for t in await h.transactions(pid)] == [tx]


async def test_without_an_exact_match_the_oldest_pending_takes_the_whole_transfer(
    h: Harness,
) -> None:
    older = await h.create_payment(ALICE, "10", created_at=h.now() - 60)
    newer = await h.create_payment(ALICE, "25")
    pay(h, ALICE, 12_000_000)  # matches neither: never split
    await h.scan()
    assert (await h.payment(older))["amount_received"] == Decimal("12")
    assert await h.status(older) == "confirming"
    assert (await h.payment(newer))["amount_received"] == 0
    pay(h, ALICE, 1_000_000)  # no pending exact: oldest pending
    await h.scan()
    assert (await h.payment(newer))["amount_received"] == Decimal("1")


async def test_transfer_mined_before_created_at_beyond_the_grace_is_not_counted(
    h: Harness,
) -> None:
    await h.scan()  # the scanner runs, and stands before the transfers
    pay(h, ALICE, 5_000_000)
    pay(h, BOB, 5_000_000)
    paid_at = h.now()
    h.chain.set_next_timestamp(paid_at + GRACE + 100)
    h.mine(1)
    too_late = await h.create_payment(ALICE, "5", created_at=paid_at + GRACE + 1)
    within_grace = await h.create_payment(BOB, "5", created_at=paid_at + GRACE)
    h.mine(3)
    await h.scan()
    assert (await h.payment(too_late))["amount_received"] == 0
    assert await h.status(too_late) == "pending"
    assert await h.transactions(too_late) == []
    assert await h.events(too_late) == []
    row = await h.payment(within_grace)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("5"))
    # the next transfer after created_at does count
    pay(h, ALICE, 5_000_000)
    await h.scan()
    assert (await h.payment(too_late))["amount_received"] == Decimal("5")


async def test_wrong_shaped_logs_of_a_configured_contract_are_skipped_and_counted(
    h: Harness,
) -> None:
    odd = deploy_odd_emitter(h.chain)
    h.chain_settings = chain_settings(
        h.chain.url, [("USDT", h.token, 6), ("DAI", h.token18, 18), ("ODD", odd, 18)]
    )
    odd_payment = await h.create_payment(ALICE, "1", token=odd)
    usdt_payment = await h.create_payment(ALICE, "2")
    await looked_at(h)
    h.chain.set_automine(False)
    emit_721(h.chain, odd, h.customer, ALICE, 10**18)
    emit_long_data(h.chain, odd, h.customer, ALICE, 10**18, 5)
    h.chain.transfer(h.token, h.customer, ALICE, 2_000_000)
    h.mine(1)  # the wrong-shaped logs and a good transfer, in one block
    h.chain.set_automine(True)
    mined(h, emit_721(h.chain, odd, h.customer, ALICE, 7))
    h.mine(2)
    await h.scan()
    assert skipped(h, "topics") == 2
    assert skipped(h, "data") == 1
    assert h.scanner is not None and h.scanner.cursor == h.chain.head()
    assert (await h.payment(odd_payment))["amount_received"] == 0
    assert await h.transactions(odd_payment) == []
    row = await h.payment(usdt_payment)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("2"))


async def test_overpayments_go_to_the_oldest_confirming_then_to_the_newest_confirmed(
    h: Harness,
) -> None:
    start = h.now()
    older = await h.create_payment(ALICE, "10", created_at=start - 60)
    newer = await h.create_payment(ALICE, "10", created_at=start)
    pay(h, ALICE, 10_000_000)
    pay(h, ALICE, 10_000_000)
    await h.scan()
    assert [await h.status(p) for p in (older, newer)] == ["confirming", "confirming"]
    pay(h, ALICE, 3_000_000)  # no pending payment left: the oldest confirming one
    await h.scan()
    assert (await h.payment(older))["amount_received"] == Decimal("13")
    h.mine(2)
    await h.scan()
    assert [await h.status(p) for p in (older, newer)] == ["confirmed", "confirmed"]
    extra = pay(h, ALICE, 500_000)  # only confirmed ones: the newest takes it, never dropped
    h.mine(2)
    await h.scan()
    row = await h.payment(newer)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("10.5"))
    assert row["amount_received"] > row["amount"]
    assert (await h.transactions(newer))[-1]["tx_hash"] == extra
    assert not (await h.transactions(newer))[-1]["late"]
    assert await h.events(newer) == [
        ("transfer_detected", None, None),
        ("status_changed", "pending", "confirming"),
        ("status_changed", "confirming", "confirmed"),
        ("transfer_detected", None, None),
    ]


async def test_zero_value_transfer_is_skipped_and_counted(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "1")
    await looked_at(h)
    pay(h, ALICE, 0)
    pay(h, ALICE, 1_000_000)
    await h.scan()
    assert skipped(h, "zero_value") == 1
    (tx,) = await h.transactions(pid)
    assert tx["value"] == 1_000_000
    assert await h.status(pid) == "confirming"
