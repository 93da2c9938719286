"""ChainReader against a real anvil (through the proxy): numbers, headers, logs, blocks, receipts,
and a lagging replica that must never make the scanner skip a block."""

from __future__ import annotations

import itertools

import pytest

from scanner.chain.reader import ChainReader
from scanner.core.decode import TRANSFER_TOPIC
from scanner.devchain import DevChain
from scanner.errors import BlockNotAvailable, ReceiptNotAvailable
from tests.chain.conftest import Recorder
from tests.support.devchain import send_failing_eth
from tests.support.proxy import FaultProxy

ALICE = "0x00000000000000000000000000000000000a11ce"
BOB = "0x0000000000000000000000000000000000000b0b"


def topic(address: str) -> str:
    return "0x" + address[2:].rjust(64, "0")


async def test_chain_id_head_and_tags(reader: ChainReader, devchain: DevChain) -> None:
    assert await reader.chain_id() == 31337
    devchain.mine(100)
    assert await reader.head() == 100
    assert await reader.tag_block("latest") == 100
    assert await reader.tag_block("finalized") == 100 - 64
    assert await reader.tag_block("safe") == 100 - 32


async def test_headers_link_and_match_the_node(reader: ChainReader, devchain: DevChain) -> None:
    devchain.mine(30)
    headers = await reader.headers(1, 30)
    assert [h.number for h in headers] == list(range(1, 31))
    for parent, child in itertools.pairwise(headers):
        assert child.parent_hash == parent.hash
    block = devchain.block(17)
    assert headers[16].hash == block["hash"].lower()
    assert headers[16].timestamp == int(block["timestamp"], 16)
    assert await reader.headers(5, 4) == []


async def test_transfer_logs(reader: ChainReader, devchain: DevChain) -> None:
    token = devchain.deploy_token()
    devchain.wait_receipt(devchain.mint(token, devchain.deployer, 1_000))
    devchain.wait_receipt(
        devchain.batch_transfer(token, devchain.deployer, [ALICE, BOB, ALICE], [1, 2, 3])
    )
    head = await reader.head()
    logs = await reader.logs([token], TRANSFER_TOPIC, 0, head)
    assert len(logs) == 4  # the mint and three transfers
    assert all(log["address"] == token and log["topics"][0] == TRANSFER_TOPIC for log in logs)
    assert [int(log["data"], 16) for log in logs] == [1_000, 1, 2, 3]
    to_alice = await reader.logs([token], TRANSFER_TOPIC, 0, head, to_topics=[topic(ALICE)])
    assert [int(log["data"], 16) for log in to_alice] == [1, 3]
    by_hash = await reader.logs_by_block_hash([token], TRANSFER_TOPIC, logs[-1]["blockHash"])
    assert by_hash == logs[1:]


async def test_no_addresses_asks_nothing(reader: ChainReader, proxy: FaultProxy) -> None:
    """To a node, an empty address list means every contract: never send it."""
    assert await reader.logs([], TRANSFER_TOPIC, 0, 0) == []
    assert await reader.logs_by_block_hash([], TRANSFER_TOPIC, "0x" + "00" * 32) == []
    assert proxy.count("eth_getLogs") == 0


async def test_blocks_and_receipt_statuses(reader: ChainReader, devchain: DevChain) -> None:
    paid = devchain.send_eth(devchain.deployer, ALICE, 10**18)
    devchain.wait_receipt(paid)
    failed = send_failing_eth(devchain, BOB, 10**18)
    head = await reader.head()
    blocks = await reader.blocks_with_transactions(1, head)
    hashes = [tx["hash"] for block in blocks for tx in block["transactions"]]
    assert paid in hashes and failed in hashes
    statuses = await reader.receipt_statuses([paid.upper().replace("0X", "0x"), failed])
    assert statuses == {paid.lower(): 1, failed.lower(): 0}


async def test_unknown_receipt_is_not_available(reader: ChainReader, recorder: Recorder) -> None:
    with pytest.raises(ReceiptNotAvailable) as caught:
        await reader.receipt_statuses(["0x" + "ab" * 32])
    assert caught.value.tx_hash == "0x" + "ab" * 32
    assert len(recorder.retries) == 3  # transient: retried up to max_attempts (4)


async def test_lagging_replica_never_skips_a_block(
    reader: ChainReader, devchain: DevChain, proxy: FaultProxy, recorder: Recorder
) -> None:
    devchain.mine(20)
    proxy.lag(5)
    assert await reader.head() == 15
    assert len(await reader.headers(10, 15)) == 6
    with pytest.raises(BlockNotAvailable) as caught:
        await reader.headers(14, 20)
    assert caught.value.block == 16  # the first block the replica lacks
    assert caught.value.transient
    # retried, then raised; the head, asked once, puts it near the head: not yet
    assert recorder.outcomes[-5:] == ["not_available"] * 4 + ["ok"]
    proxy.lag(0)
    assert [h.number for h in await reader.headers(14, 20)] == list(range(14, 21))


async def test_lagging_replica_fails_loudly_by_block_hash(
    reader: ChainReader, devchain: DevChain, proxy: FaultProxy
) -> None:
    """getLogs by range silently answers [] above a replica's head: the reader asks for the
    head in the same request and refuses that answer; by hash the node fails itself."""
    token = devchain.deploy_token()
    devchain.wait_receipt(devchain.mint(token, ALICE, 5))
    head = devchain.head()
    block_hash = devchain.block(head)["hash"]
    proxy.lag(1)
    with pytest.raises(BlockNotAvailable):
        await reader.logs([token], TRANSFER_TOPIC, head, head)  # not the silent answer
    with pytest.raises(BlockNotAvailable, match="unknown block"):
        await reader.logs_by_block_hash([token], TRANSFER_TOPIC, block_hash)
    proxy.lag(0)
    assert len(await reader.logs_by_block_hash([token], TRANSFER_TOPIC, block_hash)) == 1


async def test_a_provider_that_leaves_logs_out_once_shows_them_to_a_later_read(
    reader: ChainReader, devchain: DevChain, proxy: FaultProxy
) -> None:
    """The fault proxy's ``leave_out_logs``, as the fault simulation uses it: ``[]`` for the next
    reads, never twice for one block, so that a second read (the sweep's) sees every log."""
    token = devchain.deploy_token()
    devchain.wait_receipt(devchain.mint(token, devchain.deployer, 1_000))
    devchain.wait_receipt(devchain.transfer(token, devchain.deployer, ALICE, 5))
    head = await reader.head()
    proxy.leave_out_logs(times=3)
    assert await reader.logs([token], TRANSFER_TOPIC, 0, head - 1) == []  # left out
    by_hash = (await reader.headers_at([head]))[0].hash
    assert await reader.logs_by_block_hash([token], TRANSFER_TOPIC, by_hash) == []  # left out
    again = await reader.logs([token], TRANSFER_TOPIC, 0, head)  # every block left out once
    assert [int(log["data"], 16) for log in again] == [1_000, 5]
    devchain.wait_receipt(devchain.transfer(token, devchain.deployer, BOB, 7))
    assert await reader.logs([token], TRANSFER_TOPIC, head + 1, head + 1) == []  # the third
    after = await reader.logs([token], TRANSFER_TOPIC, 0, head + 1)  # spent: all shown
    assert [int(log["data"], 16) for log in after] == [1_000, 5, 7]
