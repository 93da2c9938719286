"""The sweep: once blocks are final, their Transfer logs are read again and a transfer the first
read left out is credited in its real block. The node is a real anvil behind a proxy that leaves
one transaction's logs out of an ``eth_getLogs`` answer (a replica that had not indexed them).
Both databases.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from scanner import commands
from scanner.config_types import RpcUrl
from scanner.scan.live import ChainScanner
from scanner.scan.sweep import Sweep
from scanner.scan.verify import Verifier
from scanner.testkit.settings import CHAIN
from tests.e2e.actions import looked_at, pay, skipped
from tests.e2e.harness import Harness
from tests.support.metrics import sample
from tests.support.proxy import FaultProxy

ALICE, BOB = "0x" + "a1" * 20, "0x" + "b2" * 20
KEY = "k3y0fth3pr0v1d3r"  # in the provider's URL: never in a log


@pytest.fixture
async def proxy(h: Harness) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(h.chain.url) as hiding:
        yield hiding


async def sweeping(h: Harness, proxy: FaultProxy, **overrides: Any) -> ChainScanner:
    """A scanner reading through ``proxy`` that sweeps every final block (as ``scanner run``
    wires it), made the harness's scanner."""
    if h.scanner is not None:
        await h.close()  # a restart: the one before is gone
    url = RpcUrl(f"{proxy.url}/v3/{KEY}")
    scanner = h.make_scanner(rpc_urls=[url], sweep_blocks=1, **overrides)
    scanner.sweep = Sweep(scanner.settings, scanner.reader, h.sessions, metrics=h.metrics)
    await scanner.prepare()
    h.scanner = scanner
    return scanner


def block_of(h: Harness, tx_hash: str) -> int:
    receipt = h.chain.receipt(tx_hash)
    assert receipt is not None
    return int(receipt["blockNumber"], 16)


async def swept_state(h: Harness) -> tuple[int, int]:
    async with h.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT swept_block, logs_missed FROM chain_states WHERE chain = :c"),
                {"c": CHAIN},
            )
        ).one()
    return int(row[0]), int(row[1])


def missed(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == "logs_missed"]


async def test_a_transfer_the_first_read_left_out_is_credited_in_its_real_block(
    h: Harness, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    scanner = await sweeping(h, proxy)
    alice, bob = await h.create_payment(ALICE, "5"), await h.create_payment(BOB, "2")
    await looked_at(h)
    pay(h, BOB, 0)  # skipped (zero value) by the first read; the sweep reads it again
    hidden = pay(h, ALICE, 5_000_000)
    pay(h, BOB, 2_000_000)
    proxy.hide_log(hidden)  # the next getLogs answer holding it leaves it out
    await h.scan()
    assert await h.status(alice) == "pending" and await h.transactions(alice) == []
    assert await h.status(bob) == "confirming"

    h.mine(3)  # final now: the sweep reads the blocks again and finds it
    with capture_logs() as logs:
        await h.scan()
    assert await h.status(alice) == "confirmed" and await h.status(bob) == "confirmed"
    (row,) = await h.transactions(alice)
    assert row["tx_hash"] == hidden and row["block_number"] == block_of(h, hidden)
    assert (row["status"], row["confirmations"], bool(row["late"])) == ("confirmed", 3, False)
    assert row["value"] == 5_000_000
    payment = await h.payment(alice)
    assert payment["amount_received"] == 5 and payment["detected_in_block"] == block_of(h, hidden)
    assert await h.events(alice) == [
        ("transfer_detected", None, None),
        ("status_changed", "pending", "confirming"),
        ("status_changed", "confirming", "confirmed"),
    ]
    (found,) = missed(logs)
    assert found["tx_hash"] == hidden and found["payment_id"] == alice
    assert found["block_number"] == block_of(h, hidden) and found["log_level"] == "warning"
    assert proxy.url.split("//")[1] in found["provider"] and KEY not in str(logs)
    assert sample(h.metrics, "scanner_logs_missed_total", chain=CHAIN) == 1
    assert len(await h.transactions()) == 2  # BOB's transfer, seen by both reads, stored once
    assert skipped(h, "zero_value") == 1  # the sweep's read of it counts it no more

    settings = h.settings.model_copy(update={"chains": [scanner.settings]})
    capsys.readouterr()
    assert await commands.status(settings, as_json=True) == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert status["logs_missed"] == 1 and status["last_logs_missed"] is not None
    assert status["swept_block"] == (await swept_state(h))[0] >= block_of(h, hidden)


async def test_an_expiry_waits_until_the_sweep_has_read_the_blocks_in_time(
    h: Harness, proxy: FaultProxy
) -> None:
    """A transfer in time that the first read left out: the block past ``expires_at`` becomes
    final before the sweep reads the paying block again, and the payment is not expired on
    blocks nobody has read twice; the sweep credits it, and ``expired`` (final for the gateway)
    is never written."""
    await sweeping(h, proxy)
    start = h.now()
    pid = await h.create_payment(ALICE, "5", created_at=start, expires_in=100)
    await looked_at(h)
    h.chain.set_next_timestamp(start + 50)
    hidden = pay(h, ALICE, 5_000_000)
    proxy.hide_log(hidden)
    h.chain.set_next_timestamp(start + 101)
    h.mine(1)  # the first block past expires_at
    await h.scan()
    assert await h.status(pid) == "pending"
    h.mine(2)  # that block is final; the paying block is not swept yet as the range commits
    await h.scan()
    row = await h.payment(pid)
    assert (row["status"], row["amount_received"]) == ("confirmed", 5)
    assert await h.events(pid) == [
        ("transfer_detected", None, None),
        ("status_changed", "pending", "confirming"),
        ("status_changed", "confirming", "confirmed"),
    ]
    (credit,) = await h.transactions(pid)
    assert (credit["tx_hash"], bool(credit["late"])) == (hidden, False)


async def test_an_expiry_is_judged_as_the_sweep_passes_it_far_below_the_head(
    h: Harness, proxy: FaultProxy
) -> None:
    """A sweep left behind the blocks the scan keeps (its provider failed for a while): when
    it passes a payment's expiry, the payment expires then, judged by the time of the block
    after the span it swept, not whenever the stored blocks happen to reach that far down."""
    async with FaultProxy(h.chain.url) as second:
        scanner = await sweeping(
            h, proxy, verify_urls=[RpcUrl(second.url)], batch_size=10, max_reorg_depth=3
        )
        try:
            start = h.now()
            pid = await h.create_payment(ALICE, "5", created_at=start, expires_in=10)
            h.chain.set_next_timestamp(start + 11)
            h.mine(1)
            after = h.chain.head()  # the first block past expires_at
            second.fail_http("eth_getLogs", 503)  # until reset
            h.mine(60)
            await h.scan()
            assert await h.status(pid) == "pending"  # the blocks in its time are not swept
            second.reset()
            await h.scan()  # at the head: one tick, one span swept from far below
            swept, _ = await swept_state(h)
            async with h.engine.connect() as conn:
                kept = (
                    await conn.execute(
                        text("SELECT count(*) FROM blocks WHERE chain = :c AND number = :n"),
                        {"c": CHAIN, "n": swept + 1},
                    )
                ).scalar_one()
            assert after <= swept + 1 and kept == 0  # swept past it; no stored block says so
            assert await h.status(pid) == "expired"
            assert await h.events(pid) == [("status_changed", "pending", "expired")]
        finally:
            assert scanner.sweep is not None
            await scanner.sweep.aclose()


async def test_a_sweep_across_restarts_neither_misses_nor_counts_twice(
    h: Harness, proxy: FaultProxy
) -> None:
    await sweeping(h, proxy)
    alice = await h.create_payment(ALICE, "5")
    await looked_at(h)
    hidden = pay(h, ALICE, 5_000_000)
    proxy.hide_log(hidden)
    await h.scan()  # read without it, not final yet: then the process stops
    assert await h.status(alice) == "pending"
    before, _ = await swept_state(h)
    assert before < block_of(h, hidden)

    h.mine(3)
    await sweeping(h, proxy)  # started again: the swept block is where the first one left it
    with capture_logs() as logs:
        await h.scan()
    assert await h.status(alice) == "confirmed"
    assert len(missed(logs)) == 1
    spans = [(e["from_block"], e["to_block"]) for e in logs if e["event"] == "range_swept"]
    assert spans[0][0] == before + 1  # nothing skipped, nothing read twice
    swept, count = await swept_state(h)
    assert count == 1 and swept >= block_of(h, hidden)

    h.mine(2)
    await sweeping(h, proxy)  # and again: what was swept is not swept again
    with capture_logs() as logs:
        await h.scan()
    spans = [(e["from_block"], e["to_block"]) for e in logs if e["event"] == "range_swept"]
    assert spans and spans[0][0] == swept + 1
    assert missed(logs) == [] and (await swept_state(h))[1] == 1
    assert [e[0] for e in await h.events(alice)].count("transfer_detected") == 1
    assert len(await h.transactions(alice)) == 1


async def test_the_sweep_reads_from_the_verify_provider_and_a_failing_one_only_delays_it(
    h: Harness, proxy: FaultProxy
) -> None:
    async with FaultProxy(h.chain.url) as second:
        scanner = await sweeping(h, proxy, verify_urls=[RpcUrl(second.url)])
        scanner.verifier = Verifier(scanner.settings, h.sessions, metrics=h.metrics)
        try:
            alice = await h.create_payment(ALICE, "5")
            await looked_at(h)
            hidden = pay(h, ALICE, 5_000_000)
            proxy.hide_log(hidden)
            second.fail_http("eth_getLogs", 503)  # until reset
            await h.scan()
            h.mine(4)
            with capture_logs() as logs:
                await h.scan()
            assert any(e["event"] == "sweep_delayed" for e in logs)
            assert scanner.cursor == h.chain.head()  # the live scan went on
            assert await h.status(alice) == "pending"

            second.reset()
            with capture_logs() as logs:
                await h.scan()
                for _ in range(2):  # the verifier checks the credit, the next plan confirms
                    h.mine(1)
                    await h.scan()
            assert await h.status(alice) == "confirmed"
            assert missed(logs)[0]["provider"] == second.url
            assert second.count("eth_getLogs") > 0 and proxy.count("eth_getLogs") > 0
        finally:
            await scanner.verifier.aclose()
            assert scanner.sweep is not None
            await scanner.sweep.aclose()


async def test_in_tag_mode_a_block_is_swept_once_it_is_under_the_finalized_block(
    h: Harness, proxy: FaultProxy
) -> None:
    """anvil's ``finalized`` is 64 blocks below its head."""
    await sweeping(h, proxy, confirmations=None, finality="finalized")
    alice = await h.create_payment(ALICE, "5")
    await looked_at(h)
    hidden = pay(h, ALICE, 5_000_000)
    proxy.hide_log(hidden)
    await h.scan()
    h.mine(60)
    await h.scan()
    assert await h.status(alice) == "pending"  # 61 deep, not under the tag yet
    assert (await swept_state(h))[0] < block_of(h, hidden)
    h.mine(4)
    await h.scan()
    assert await h.status(alice) == "confirmed"
    (row,) = await h.transactions(alice)
    assert row["block_number"] == block_of(h, hidden) and row["status"] == "confirmed"


async def test_blocks_a_walk_back_went_over_are_swept_again(h: Harness, proxy: FaultProxy) -> None:
    """A reorg deeper than the confirmations re-mines a swept transfer in another block, and the
    rescan's read leaves it out: the swept block went back with the cursor, so the sweep reads
    the new blocks once final and credits the transfer where it is now."""
    await sweeping(h, proxy)
    alice = await h.create_payment(ALICE, "5")
    await looked_at(h)
    tx = pay(h, ALICE, 5_000_000)
    first = block_of(h, tx)
    h.mine(3)
    await h.scan()
    assert await h.status(alice) == "confirmed" and (await swept_state(h))[0] >= first

    h.chain.reorg(4, [(h.chain.raw_tx(tx), 1)])  # blocks first.. replaced; tx now in first + 1
    proxy.hide_log(tx)
    with capture_logs() as logs:  # the walk-back orphans the credit, the rescan's read leaves
        await h.scan()  # the transfer out, and the new blocks up to the final one are swept
    assert [e["event"] for e in logs if e["event"] in ("reorg_detected", "logs_missed")] == [
        "reorg_detected",
        "logs_missed",
    ]
    row = await h.payment(alice)
    assert (row["status"], row["amount_received"]) == ("confirmed", 5)
    (credit,) = await h.transactions(alice)
    assert credit["block_number"] == first + 1 == block_of(h, tx)
    assert credit["status"] == "confirmed"
    assert (await swept_state(h))[1] == 1


async def test_with_the_tokens_logs_read_whole_only_watched_transfers_are_credited(
    h: Harness, proxy: FaultProxy
) -> None:
    """A book of more addresses than ``filter_recipients_max`` (here 0): the sweep reads the
    tokens' logs whole and keeps the transfers to watched addresses that are not stored."""
    await sweeping(h, proxy, filter_recipients_max=0)
    alice = await h.create_payment(ALICE, "5")
    await looked_at(h)
    hidden = pay(h, ALICE, 5_000_000)
    stranger = pay(h, "0x" + "99" * 20, 7_000_000)  # to no payment: never stored
    proxy.hide_log(hidden)
    proxy.hide_log(stranger)
    await h.scan()
    h.mine(3)
    with capture_logs() as logs:
        await h.scan()
    assert [e["tx_hash"] for e in missed(logs)] == [hidden]
    assert await h.status(alice) == "confirmed"
    assert [t["tx_hash"] for t in await h.transactions()] == [hidden]


async def test_a_sweep_provider_behind_the_final_blocks_delays_the_sweep_and_skips_nothing(
    h: Harness, proxy: FaultProxy
) -> None:
    """A replica behind the blocks to sweep answers ``[]`` for them: the sweep waits for one
    whose head covers them, it never takes that answer as "nothing missing"."""
    async with FaultProxy(h.chain.url) as second:
        scanner = await sweeping(h, proxy, verify_urls=[RpcUrl(second.url)])
        scanner.verifier = Verifier(scanner.settings, h.sessions, metrics=h.metrics)
        try:
            alice = await h.create_payment(ALICE, "5")
            await looked_at(h)
            hidden = pay(h, ALICE, 5_000_000)
            proxy.hide_log(hidden)
            second.lag(20)
            await h.scan()
            h.mine(4)
            with capture_logs() as logs:
                await h.scan()
            assert any(e["event"] == "sweep_delayed" for e in logs)
            assert (await swept_state(h))[0] < block_of(h, hidden)
            assert await h.status(alice) == "pending"

            second.lag(0)
            for _ in range(3):
                await h.scan()
                h.mine(1)
            assert await h.status(alice) == "confirmed"
            (row,) = await h.transactions(alice)
            assert row["block_number"] == block_of(h, hidden)
        finally:
            await scanner.verifier.aclose()
            assert scanner.sweep is not None
            await scanner.sweep.aclose()


async def test_a_sweep_cut_off_mid_read_is_done_once_after_a_restart(
    h: Harness, proxy: FaultProxy
) -> None:
    """The process dies while the sweep's read is under way (the task is cancelled where a
    kill would stop it): nothing of the sweep was written, and the next process sweeps the
    same blocks, crediting the transfer once."""
    async with FaultProxy(h.chain.url) as second:
        scanner = await sweeping(h, proxy, verify_urls=[RpcUrl(second.url)])
        alice = await h.create_payment(ALICE, "5")
        await looked_at(h)
        hidden = pay(h, ALICE, 5_000_000)
        proxy.hide_log(hidden)
        await h.scan()
        before, _ = await swept_state(h)
        h.mine(4)
        gate = second.hold("eth_getLogs")
        tick = asyncio.create_task(h.scan())
        async with asyncio.timeout(10):
            await gate.wait_reached()
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
        assert scanner.sweep is not None
        await scanner.sweep.aclose()
        assert await swept_state(h) == (before, 0) and await h.status(alice) == "pending"

        second.reset()
        scanner = await sweeping(h, proxy, verify_urls=[RpcUrl(second.url)])
        scanner.verifier = Verifier(scanner.settings, h.sessions, metrics=h.metrics)
        try:
            with capture_logs() as logs:
                for _ in range(3):
                    await h.scan()
                    h.mine(1)
        finally:
            await scanner.verifier.aclose()
            assert scanner.sweep is not None
            await scanner.sweep.aclose()
        spans = [(e["from_block"], e["to_block"]) for e in logs if e["event"] == "range_swept"]
        assert spans[0][0] == before + 1
        assert len(missed(logs)) == 1 and (await swept_state(h))[1] == 1
        assert await h.status(alice) == "confirmed" and len(await h.transactions(alice)) == 1
