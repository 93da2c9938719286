"""The tokens table is the gateway's, and live: rows it writes or changes take effect at the next
tick, bad rows are skipped loudly, and decimals that disagree with the contract halt that token
alone."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import text
from structlog.testing import capture_logs

from scanner.testkit.gateway import NewPayment, insert_payments
from scanner.testkit.settings import CHAIN
from tests.e2e.actions import pay
from tests.e2e.gateway import same_id, sql_literal
from tests.e2e.harness import Harness
from tests.support.metrics import sample

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20


async def _token_row(h: Harness, address: str, symbol: str, decimals: object) -> str:
    token_id = str(uuid.uuid4())
    values = ", ".join(sql_literal(v) for v in (token_id, CHAIN, address, symbol, decimals))
    async with h.engine.begin() as conn:
        await conn.execute(
            text(f"INSERT INTO tokens (id, chain, address, symbol, decimals) VALUES ({values})")
        )
    return token_id


async def _set_enabled(h: Harness, token: str, enabled: bool) -> None:
    async with h.engine.begin() as conn:
        await conn.execute(
            text("UPDATE tokens SET enabled = :e WHERE chain = :c AND address = :a"),
            {"e": enabled, "c": CHAIN, "a": token.lower()},
        )


async def test_a_token_row_with_a_bad_address_is_skipped_loudly(h: Harness) -> None:
    await h.scan()
    await _token_row(h, "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", "USDT-TRON", 6)  # base58
    await _token_row(h, "0x" + "12" * 20, "ODD", -3)  # decimals out of range
    good = await h.create_payment(ALICE, "5")
    with capture_logs() as logs:
        pay(h, ALICE, 5_000_000)
        h.mine(3)
        await h.scan()
        await h.scan()  # reported once, not every tick
    invalid = [e for e in logs if e["event"] == "token_invalid"]
    assert sorted(e["reason"].split(" ")[0] for e in invalid) == ["address", "decimals"]
    assert sample(h.metrics, "scanner_invalid_rows_total", chain=CHAIN, table="tokens") == 2
    assert (await h.payment(good))["status"] == "confirmed"


async def test_decimals_that_disagree_with_the_contract_halt_that_token(h: Harness) -> None:
    wrong = h.chain.deploy_token("Wrapped", "WRP", 18)
    h.chain.mint(wrong, h.customer, 10**24)
    await h.scan()
    token_id = await _token_row(h, wrong, "WRP", 6)  # the gateway says 6
    fooled = await h.create_payment(ALICE, "5", token=wrong)
    good = await h.create_payment(BOB, "5")
    with capture_logs() as logs:
        pay(h, ALICE, 5_000_000, token=wrong)  # 5×10⁻¹² real tokens
        pay(h, BOB, 5_000_000)
        h.mine(3)
        await h.scan()
    (halted,) = [e for e in logs if e["event"] == "token_halted"]
    assert "says 6" in halted["reason"] and "says 18" in halted["reason"]
    assert sample(h.metrics, "scanner_token_halted", chain=CHAIN, token=wrong.lower()) == 1
    assert (await h.payment(fooled))["status"] == "pending"
    assert await h.transactions(fooled) == []
    assert (await h.payment(good))["status"] == "confirmed"
    async with h.engine.begin() as conn:  # the gateway corrects the row: the token resumes
        where = same_id(h, "id", token_id)
        await conn.execute(text(f"UPDATE tokens SET decimals = 18 WHERE {where}"))
    await h.scan()
    assert sample(h.metrics, "scanner_token_halted", chain=CHAIN, token=wrong.lower()) == 0


async def test_a_token_enabled_again_is_looked_back_for(h: Harness) -> None:
    pid = await h.create_payment(ALICE, "5")
    await _set_enabled(h, h.token, False)
    await h.scan()  # the next tick: the token is off
    paid = pay(h, ALICE, 5_000_000)
    h.mine(3)
    await h.scan()
    assert await h.transactions(pid) == []  # its logs are not read while it is off
    await _set_enabled(h, h.token, True)
    with capture_logs() as logs:
        await h.scan()  # no restart
    assert [e["tokens"] for e in logs if e["event"] == "tokens_enabled"] == [[h.token.lower()]]
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("confirmed", Decimal("5"))
    assert [t["tx_hash"] for t in await h.transactions(pid)] == [paid]


async def test_a_new_token_row_is_scanned_from_the_next_tick(h: Harness) -> None:
    extra = h.chain.deploy_token("Euro", "EURT", 6)
    h.chain.mint(extra, h.customer, 10**12)
    await h.scan()
    await _token_row(h, extra, "EURT", 6)
    pid = await h.create_payment(ALICE, "5", token=extra)
    pay(h, ALICE, 5_000_000, token=extra)
    h.mine(3)
    await h.scan()
    assert (await h.payment(pid))["status"] == "confirmed"


async def test_a_token_enabled_again_while_the_scanner_was_down_is_looked_back_for(
    h: Harness,
) -> None:
    pid = await h.create_payment(ALICE, "5")
    await _set_enabled(h, h.token, False)
    await h.scan()  # the scanner sees it off
    paid = pay(h, ALICE, 5_000_000)
    h.mine(3)
    await h.scan()  # and passes the payment's block while it is off, then stops
    await h.close()
    h.scanner = None
    await _set_enabled(h, h.token, True)
    await h.scan()  # a new process
    assert [t["tx_hash"] for t in await h.transactions(pid)] == [paid]
    assert (await h.payment(pid))["status"] == "confirmed"


async def test_two_rows_of_one_contract_in_other_letter_case_are_reported_and_both_followed(
    h: Harness,
) -> None:
    """The chain's addresses are lower-case hex: a second row naming the same contract in upper
    case is that contract's too. It is reported once (``token_invalid``); the payments on
    either row are followed, each credited under its own row."""
    await h.scan()
    upper = await _token_row(h, "0x" + h.token[2:].upper(), "USDT", 6)
    lower = await h.token_id(h.token)
    on_lower = await h.create_payment(ALICE, "5")
    on_upper = str(uuid.uuid4())
    created = h.now()
    async with h.engine.begin() as conn:
        row = NewPayment(on_upper, upper, CHAIN, BOB, "7", created + 3600, created)
        await insert_payments(conn, [row])
    with capture_logs() as logs:
        pay(h, ALICE, 5_000_000)
        pay(h, BOB, 7_000_000)
        h.mine(3)
        await h.scan()
        await h.scan()  # reported once, not every tick
    (invalid,) = [e for e in logs if e["event"] == "token_invalid"]
    assert invalid["token_id"] in (upper, lower) and "lower case" in invalid["reason"]
    assert sample(h.metrics, "scanner_invalid_rows_total", chain=CHAIN, table="tokens") == 1
    for payment, token_row, value in ((on_lower, lower, 5), (on_upper, upper, 7)):
        assert (await h.payment(payment))["status"] == "confirmed"
        (credit,) = await h.transactions(payment)
        assert credit["value"] == value * 10**6
        async with h.engine.connect() as conn:
            where = same_id(h, "payment_id", payment)
            stored = await conn.execute(text(f"SELECT token_id FROM transactions WHERE {where}"))
            assert str(stored.scalar_one()) == token_row
