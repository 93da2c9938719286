"""The TRON JSON-RPC simulator answers as java-tron does (4.8.1 code, 4.8.2 docs); each test
names the java-tron source of the rule it checks."""

from __future__ import annotations

from typing import Any

import pytest

from scanner.devchain.tron import (
    MAINNET_GENESIS,
    RATE_LIMITED,
    TRANSFER_TOPIC,
    TronChain,
    TronNode,
    answer,
)

TOKEN = "0xa614f803b6fd780986a42c78ec9c7f77e6ded13c"
ALICE, BOB = "0x" + "a1" * 20, "0x" + "b2" * 20


def call(chain: TronChain, method: str, *params: Any) -> Any:
    reply = answer(chain, {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    if "error" in reply:
        raise AssertionError(reply["error"])
    return reply["result"]


def error(chain: TronChain, method: str, *params: Any) -> tuple[int, str]:
    reply = answer(chain, {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    assert reply["error"]["data"] == "{}"
    return reply["error"]["code"], reply["error"]["message"]


@pytest.fixture
def chain() -> TronChain:
    chain = TronChain(genesis_time=1_700_000_000)
    chain.mine(40)
    return chain


def test_chain_id_is_the_genesis_block_ids_last_four_bytes(chain: TronChain) -> None:
    # TronJsonRpcImpl.ethChainId: last 4 bytes of block 0's BlockId
    assert call(chain, "eth_chainId") == "0x2b6653dc" == "0x" + MAINNET_GENESIS[-8:]
    assert int(call(chain, "eth_chainId"), 16) == 728126428


def test_a_block_hash_is_its_block_id_with_the_height_first(chain: TronChain) -> None:
    # JsonRpcApiUtil.getBlockID; BlockResult (timestamp in seconds, zero bloom, alphabetic)
    block = call(chain, "eth_getBlockByNumber", "0x20", False)
    assert block["hash"].startswith("0x" + f"{0x20:016x}")
    assert block["logsBloom"] == "0x" + "00" * 256
    assert int(block["timestamp"], 16) == 1_700_000_000 + 3 * 0x20
    assert list(block) == sorted(block)
    assert call(chain, "eth_getBlockByNumber", "32", False)["hash"] == block["hash"]  # decimal


def test_tags(chain: TronChain) -> None:
    # Wallet.getByJsonBlockId; DposService.updateSolidBlock (head - 18); TAG_PENDING_SUPPORT_ERROR
    assert call(chain, "eth_getBlockByNumber", "finalized", False)["number"] == hex(40 - 18)
    assert call(chain, "eth_getBlockByNumber", "earliest", False)["number"] == "0x0"
    assert error(chain, "eth_getBlockByNumber", "pending", False) == (
        -32602,
        "TAG pending not supported",
    )
    assert error(chain, "eth_getBlockByNumber", "safe", False) == (-32602, "TAG safe not supported")
    assert call(chain, "eth_getBlockByNumber", "0x99", False) is None


def test_get_logs_limits(chain: TronChain) -> None:
    # LogFilterWrapper (5,000 blocks, checked on min(toBlock, head)); LogBlockQuery (10,000)
    chain.mine(6000)
    assert error(chain, "eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(5001)}) == (
        -32602,
        "exceed max block range: 5000",
    )
    assert call(chain, "eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(5000)}) == []
    for _ in range(10_001):
        chain.transfer(TOKEN, ALICE, BOB, 1)
    chain.mine(1)
    head = hex(chain.head.number)
    assert error(chain, "eth_getLogs", {"fromBlock": head, "toBlock": head}) == (
        -32005,
        "query returned more than 10000 results",
    )


def test_the_log_address_filter_takes_20_byte_hex_only(chain: TronChain) -> None:
    # JsonRpcApiUtil.addressToByteArray; docs json-rpc/index.md "Address encoding"
    window = {"fromBlock": "0x1", "toBlock": "0x2"}
    assert call(chain, "eth_getLogs", {**window, "address": TOKEN[2:]}) == []
    code, message = error(
        chain, "eth_getLogs", {**window, "address": "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"}
    )
    assert (code, message.startswith("invalid address")) == (-32602, True)
    code, message = error(chain, "eth_getLogs", {**window, "address": ["41" + TOKEN[2:]]})
    assert message.startswith("invalid address at index 0")
    assert error(chain, "eth_getLogs", {"fromBlock": "1", "toBlock": "0x2"}) == (
        -32602,
        "Incorrect hex syntax",
    )


def test_a_transfer_made_by_a_contract_is_a_log_of_the_token(chain: TronChain) -> None:
    exchange = "0x" + "ee" * 20
    tx = chain.transfer(TOKEN, exchange, BOB, 7, via=exchange)
    chain.mine(1)
    (log,) = call(
        chain, "eth_getLogs", {"fromBlock": "latest", "address": TOKEN, "topics": [TRANSFER_TOPIC]}
    )
    assert log["transactionHash"] == tx and log["address"] == TOKEN
    assert call(chain, "eth_getTransactionReceipt", tx)["to"] == exchange


def test_hidden_logs_stay_in_the_receipts(chain: TronChain) -> None:
    # java-tron #4447, #6037, #6384: eth_getLogs answers [] for logs that exist
    tx = chain.transfer(TOKEN, ALICE, BOB, 5)
    failed = chain.transfer(TOKEN, ALICE, BOB, 6, success=False)
    chain.mine(1)
    chain.hide_logs(tx)
    head = hex(chain.head.number)
    assert call(chain, "eth_getLogs", {"fromBlock": head, "toBlock": head}) == []
    receipts = call(chain, "eth_getBlockReceipts", head)
    assert [r["status"] for r in receipts] == ["0x1", "0x0"]
    assert receipts[0]["logs"][0]["transactionHash"] == tx and receipts[1]["logs"] == []
    assert receipts[1]["transactionHash"] == failed
    assert call(chain, "eth_getBlockReceipts", "0x0") is None  # getBlockReceipts: block 0
    assert call(chain, "eth_getBlockReceipts", "0x9999") is None


def test_reorgs_take_a_longer_branch_above_the_solidified_block(chain: TronChain) -> None:
    tx = chain.transfer(TOKEN, ALICE, BOB, 5)
    chain.mine(1)
    old = call(chain, "eth_getBlockByNumber", "latest", False)["hash"]
    chain.reorg(2, 3)
    assert call(chain, "eth_getBlockByNumber", hex(int(old[2:18], 16)), False)["hash"] != old
    assert call(chain, "eth_getBlockByHash", old, False) is None
    assert call(chain, "eth_getTransactionReceipt", tx)["blockNumber"] == hex(chain.head.number - 2)
    with pytest.raises(AssertionError):
        call(chain, "sim_reorg", 2, 2)  # not longer
    with pytest.raises(AssertionError):
        call(chain, "sim_reorg", 30, 40)  # below the solidified block


def test_batches_and_the_rate_limiter_answer_with_http_200_bodies(chain: TronChain) -> None:
    # v4.8.2 notes item 8 (batch > 100); the rate limiter's body
    many = [{"jsonrpc": "2.0", "id": i, "method": "eth_blockNumber"} for i in range(101)]
    assert answer(chain, many)["error"]["code"] == -32005
    chain.rps = 1
    assert "result" in answer(chain, {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"})
    assert answer(chain, {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber"}) == RATE_LIMITED


def test_the_node_process_serves_json_rpc_at_jsonrpc() -> None:
    with TronNode.start(blocks=5) as node:
        assert node.url.endswith("/jsonrpc") and node.head() == 5
        tx = node.transfer(TOKEN, ALICE, BOB, 9)
        node.mine(2)
        assert int(node.rpc("eth_getTransactionReceipt", [tx])["blockNumber"], 16) == 6
