"""TRC-20 payments end to end on the TRON simulator, both databases: what the gateway sees.

Each rule names the java-tron source it follows."""

from __future__ import annotations

from decimal import Decimal

from structlog.testing import capture_logs

from scanner.core.tron_address import to_base58
from tests.tron.conftest import EXCHANGE, SENDER, USDT, USDT_HEX, TronHarness, customer

EXPIRES = 3600


async def test_a_payment_written_in_base58_is_confirmed_at_the_solidified_block(
    th: TronHarness,
) -> None:
    # DposService.updateSolidBlock: the solidified block is head - 18 (27 SRs, 70 %);
    # Wallet.getByJsonBlockId: the "finalized" tag is that block, the kind's default finality
    hex20, base58 = customer(1)
    payment = await th.create_payment(base58, "25")
    th.pay(hex20, 25_000_000)
    mined = th.node.head() if th.node else 0
    await th.scan()
    row = await th.payment(payment)
    assert (row["status"], row["amount_received"]) == ("confirming", Decimal("25"))
    th.mine(17)  # solidified: head - 18 = mined - 1
    await th.scan()
    assert await th.status(payment) == "confirming"
    th.mine(1)  # solidified = mined
    await th.scan()
    row = await th.payment(payment)
    assert (row["status"], row["detected_in_block"]) == ("confirmed", mined)
    [credit] = await th.transactions(payment)
    assert (credit["value"], credit["status"]) == (25_000_000, "confirmed")


async def test_addresses_in_41_hex_and_0x_hex_are_matched_too(th: TronHarness) -> None:
    # JsonRpcApiUtil.addressToByteArray: the JSON-RPC speaks 20-byte hex; users write 41…/T…
    a_hex, _ = customer(2)
    b_hex, _ = customer(3)
    by_41 = await th.create_payment("41" + a_hex[2:].upper(), "1")
    by_0x = await th.create_payment(b_hex.upper().replace("0X", "0x"), "2")
    th.pay(a_hex, 1_000_000)
    th.pay(b_hex, 2_000_000)
    await th.scan()
    assert (await th.payment(by_41))["amount_received"] == Decimal("1")
    assert (await th.payment(by_0x))["amount_received"] == Decimal("2")


async def test_a_reorg_before_solidification_orphans_the_credit(th: TronHarness) -> None:
    # Manager.switchFork: a node switches only to a longer branch, never below the solidified
    # block; the branch here does not include the transfer
    hex20, base58 = customer(4)
    payment = await th.create_payment(base58, "5")
    th.pay(hex20, 5_000_000)
    await th.scan()
    assert await th.status(payment) == "confirming"
    assert th.node is not None
    th.node.reorg(2, 3, keep=False)
    await th.scan()
    row = await th.payment(payment)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("0"))
    assert [t["status"] for t in await th.transactions(payment)] == ["orphaned"]
    assert ("transfer_orphaned", None, None) in await th.events(payment)


async def test_a_reverted_transfer_is_never_credited(th: TronHarness) -> None:
    # TransactionReceipt: status 0x0 for a failed contract call, which leaves no log
    hex20, base58 = customer(5)
    payment = await th.create_payment(base58, "5")
    th.pay(hex20, 5_000_000, success=False)
    th.mine(20)
    await th.scan()
    row = await th.payment(payment)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("0"))
    assert await th.transactions(payment) == []


async def test_a_transfer_made_by_a_contract_is_seen(th: TronHarness) -> None:
    # LogFilterWrapper/LogMatch: eth_getLogs returns the token's Transfer log whoever called
    # the token (an exchange's withdrawal contract): logs are read, never call data
    hex20, base58 = customer(6)
    payment = await th.create_payment(base58, "7")
    th.pay(hex20, 7_000_000, via=EXCHANGE)
    await th.scan()
    assert (await th.payment(payment))["amount_received"] == Decimal("7")


async def test_a_batch_payout_pays_every_recipient(th: TronHarness) -> None:
    # one transaction, many Transfer logs; logIndex counts all logs of the block (LogMatch)
    owners = [customer(n) for n in (7, 8, 9)]
    ids = [await th.create_payment(b58, str(n + 1)) for n, (_, b58) in enumerate(owners)]
    also = [(h, (n + 2) * 1_000_000) for n, (h, _) in enumerate(owners[1:])]
    th.pay(owners[0][0], 1_000_000, also=also)
    await th.scan()
    assert [(await th.payment(i))["amount_received"] for i in ids] == [1, 2, 3]
    assert len({t["log_index"] for i in ids for t in await th.transactions(i)}) == 3


async def test_a_partial_payment_stays_pending_until_topped_up(th: TronHarness) -> None:
    hex20, base58 = customer(10)
    payment = await th.create_payment(base58, "10")
    th.pay(hex20, 4_000_000)
    await th.scan()
    row = await th.payment(payment)
    assert (row["status"], row["amount_received"]) == ("pending", Decimal("4"))
    th.pay(hex20, 6_000_000)
    th.mine(18)
    await th.scan()
    row = await th.payment(payment)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("10"))


async def test_a_bad_checksum_and_a_trx_payment_are_invalid_and_the_scan_goes_on(
    th: TronHarness,
) -> None:
    # JsonRpcApiUtil: a TRX (or TRC-10) transfer is a transaction value with no log, so a
    # payment with no token cannot be followed over JSON-RPC
    hex20, base58 = customer(11)
    broken = base58[:-1] + ("1" if base58[-1] != "1" else "2")
    bad = await th.create_payment(broken, "1")
    native = await th.create_payment(base58, "1", token=None)
    good = await th.create_payment(base58, "3")
    th.pay(hex20, 3_000_000)
    await th.scan()
    assert (await th.payment(good))["amount_received"] == Decimal("3")
    assert await th.events(bad) == [("invalid_payment", None, None)]
    assert await th.events(native) == [("invalid_payment", None, None)]
    assert await th.status(bad) == await th.status(native) == "pending"
    reasons = await _reasons(th, native)
    assert "TRX" in reasons[0]


async def _reasons(th: TronHarness, payment: str) -> list[str]:
    import json

    from sqlalchemy import text

    from scanner.testkit.gateway import db_id

    async with th.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT data FROM payment_events WHERE payment_id = :id ORDER BY id"),
            {"id": db_id(th.engine, payment)},
        )
        return [
            (json.loads(r[0]) if isinstance(r[0], str) else r[0]).get("reason", "") for r in rows
        ]


def test_customer_addresses_are_base58() -> None:
    assert to_base58(SENDER).startswith("T")
    assert USDT_HEX == "0xa614f803b6fd780986a42c78ec9c7f77e6ded13c"


async def test_logs_show_tron_addresses_in_base58(th: TronHarness) -> None:
    # Wallet.encode58Check: what wallets and the gateway show; the JSON-RPC speaks 20-byte hex
    hex20, base58 = customer(12)
    with capture_logs() as logs:
        await th.scan()
        await th.create_payment(base58, "5", created_at=th.now() + 86_400)  # after the transfer
        th.pay(hex20, 5_000_000)
        await th.scan()
    [tokens] = [e["tokens"] for e in logs if e["event"] == "tokens_changed"]
    assert tokens == [USDT]
    [stray] = [e for e in logs if e["event"] == "transfer_unmatched"]
    assert (stray["address"], stray["token"], stray["value"]) == (base58, USDT, "5000000")
