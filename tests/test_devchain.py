"""Real tests of the local test chain (anvil) and the committed test contracts. No mocks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import scanner.devchain.node as node_module
from scanner.devchain import (
    FAST_BULK_ARGS,
    Anvil,
    AnvilStartError,
    DevChain,
    build_bulk_chain,
    load_artifact,
)
from scanner.devchain.contracts import batch_calldata, calldata
from scanner.devchain.node import free_port as real_free_port
from scanner.errors import RpcResponseError, ScannerError
from tests.support.devchain import (
    deploy_odd_emitter,
    emit_721,
    emit_long_data,
    send_failing_eth,
    web3_client,
)
from tests.support.wait import until_sync

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
REPO = Path(__file__).resolve().parents[1]


def addr(n: int) -> str:
    return f"0x{n:040x}"


def topic_address(topic: str) -> str:
    return "0x" + topic[-40:]


@pytest.fixture(scope="module")
def token(module_devchain: DevChain) -> str:
    return module_devchain.deploy_token("Test USD", "TUSD", 6)


def test_token_reports_decimals_name_and_symbol(module_devchain: DevChain) -> None:
    chain = module_devchain
    for decimals in (6, 18):
        address = chain.deploy_token(f"Token{decimals}", f"T{decimals}", decimals)
        assert address == address.lower()
        assert chain.token_decimals(address) == decimals
        with web3_client(chain) as w3:
            contract = w3.eth.contract(
                address=w3.to_checksum_address(address), abi=load_artifact("TestToken")["abi"]
            )
            assert contract.functions.decimals().call() == decimals
            assert contract.functions.symbol().call() == f"T{decimals}"


def test_first_deploy_lands_at_the_well_known_address(devchain: DevChain) -> None:
    assert devchain.deploy_token() == "0x5fbdb2315678afecb367f032d93f642f64180aa3"


def test_batch_transfer_emits_one_standard_log_per_recipient(
    module_devchain: DevChain,
    token: str,
) -> None:
    chain = module_devchain
    sender = addr(0xABC)  # not a dev account: impersonated
    recipients = [addr(0x100 + i) for i in range(5)]
    amounts = [10**6 * (i + 1) for i in range(5)]
    chain.wait_receipt(chain.mint(token, sender, sum(amounts)))

    receipt = chain.wait_receipt(chain.batch_transfer(token, sender, recipients, amounts))

    assert receipt["status"] == "0x1"
    logs = receipt["logs"]
    assert len(logs) == len(recipients)
    for log, to, amount in zip(logs, recipients, amounts, strict=True):
        assert log["address"] == token
        assert len(log["topics"]) == 3
        assert log["topics"][0] == TRANSFER_TOPIC
        assert topic_address(log["topics"][1]) == sender
        assert topic_address(log["topics"][2]) == to
        assert len(bytes.fromhex(log["data"][2:])) == 32
        assert int(log["data"], 16) == amount
        assert chain.token_balance(token, to) == amount
    assert chain.token_balance(token, sender) == 0


def test_single_transfer_from_a_dev_account(module_devchain: DevChain, token: str) -> None:
    chain = module_devchain
    sender, to = chain.accounts[1], addr(0x200)
    chain.wait_receipt(chain.mint(token, sender, 5))
    receipt = chain.wait_receipt(chain.transfer(token, sender, to, 5))
    assert [int(log["data"], 16) for log in receipt["logs"]] == [5]
    assert chain.logs(receipt["blockNumber"], receipt["blockNumber"], token) == receipt["logs"]


def test_odd_emitter_logs_have_the_wrong_shape(module_devchain: DevChain) -> None:
    chain = module_devchain
    emitter = deploy_odd_emitter(chain)
    frm, to = addr(0x301), addr(0x302)

    log721 = chain.wait_receipt(emit_721(chain, emitter, frm, to, 77))["logs"][0]
    long_data = chain.wait_receipt(emit_long_data(chain, emitter, frm, to, 1, 2))["logs"][0]

    assert log721["topics"][0] == long_data["topics"][0] == TRANSFER_TOPIC
    assert len(log721["topics"]) == 4
    assert int(log721["topics"][3], 16) == 77
    assert log721["data"] == "0x"
    assert len(long_data["topics"]) == 3
    assert [topic_address(t) for t in long_data["topics"][1:]] == [frm, to]
    assert long_data["data"] == "0x" + f"{1:064x}{2:064x}"


def test_failing_eth_payment_to_a_contract_is_mined_with_status_0(
    module_devchain: DevChain,
) -> None:
    chain = module_devchain
    tx_hash = send_failing_eth(chain, value=3 * 10**18)
    receipt = chain.wait_receipt(tx_hash)
    tx = chain.rpc("eth_getTransactionByHash", [tx_hash])
    assert receipt["status"] == "0x0"
    assert int(tx["value"], 16) == 3 * 10**18
    assert chain.balance(receipt["to"]) == 0
    assert chain.code(receipt["to"]) != "0x"  # a contract (Reverter code) stays there


def test_failing_eth_payment_to_an_eoa_address(module_devchain: DevChain) -> None:
    chain = module_devchain
    watched = addr(0xBEEF)
    before = chain.balance(watched)

    tx_hash = send_failing_eth(chain, watched, 10**17)

    receipt = chain.wait_receipt(tx_hash)
    assert receipt["status"] == "0x0"
    assert receipt["to"] == watched
    assert int(chain.rpc("eth_getTransactionByHash", [tx_hash])["value"], 16) == 10**17
    assert chain.balance(watched) == before
    assert chain.code(watched) == "0x"  # looks like an EOA again


def test_plain_eth_payment(module_devchain: DevChain) -> None:
    chain = module_devchain
    to = addr(0xE7)
    receipt = chain.wait_receipt(chain.send_eth(addr(0xF00), to, 12345))  # impersonated sender
    assert receipt["status"] == "0x1"
    assert chain.balance(to) == 12345


def test_reorg_moves_a_transaction_to_another_block(devchain: DevChain) -> None:
    chain = devchain
    token = chain.deploy_token()
    chain.wait_receipt(chain.mint(token, chain.deployer, 100))
    tx_hash = chain.transfer(token, chain.deployer, addr(0x400), 100)
    height = int(chain.wait_receipt(tx_hash)["blockNumber"], 16)
    chain.mine(2)
    assert chain.head() == height + 2
    old_hashes = [chain.block(n)["hash"] for n in range(height, height + 3)]

    chain.reorg(3, [(chain.raw_tx(tx_hash), 2)])

    assert chain.head() == height + 2
    new_hashes = [chain.block(n)["hash"] for n in range(height, height + 3)]
    assert all(old != new for old, new in zip(old_hashes, new_hashes, strict=True))
    assert chain.block(height)["parentHash"] == chain.block(height - 1)["hash"]
    receipt = chain.wait_receipt(tx_hash)
    assert int(receipt["blockNumber"], 16) == height + 2
    assert receipt["blockHash"] == new_hashes[2]
    assert chain.block(height)["transactions"] == []


def test_reorg_with_a_dict_transaction(devchain: DevChain) -> None:
    chain = devchain
    chain.mine(3)
    to = addr(0x401)
    chain.reorg(2, [({"from": chain.deployer, "to": to, "value": 7}, 1)])
    block = chain.block(chain.head())
    assert len(block["transactions"]) == 1
    assert chain.balance(to) == 7


def test_snapshot_revert_then_mine_gives_another_hash_at_the_same_height(
    devchain: DevChain,
) -> None:
    chain = devchain
    chain.mine(2)
    snap = chain.snapshot()
    chain.mine()
    height, first = chain.head(), chain.block("latest")

    assert chain.revert(snap)
    assert chain.head() == height - 1
    chain.increase_time(1)  # do not rely on anvil's base-fee drift to change the hash
    chain.mine()

    second = chain.block(height)
    assert second["parentHash"] == first["parentHash"]
    assert second["hash"] != first["hash"]


def test_time_and_automine_controls(devchain: DevChain) -> None:
    chain = devchain
    ts = int(chain.block()["timestamp"], 16) + 1000
    chain.set_next_timestamp(ts)
    chain.mine()
    assert int(chain.block()["timestamp"], 16) == ts
    chain.increase_time(3600)
    chain.mine()
    assert int(chain.block()["timestamp"], 16) >= ts + 3600
    start = chain.head()
    chain.mine(5, interval=12)
    assert chain.head() == start + 5
    assert int(chain.block()["timestamp"], 16) - int(chain.block(start + 1)["timestamp"], 16) == 48

    chain.set_automine(False)
    assert not chain.automine()
    tx_hash = chain.send_eth(chain.deployer, addr(0x500), 1)
    assert chain.receipt(tx_hash) is None
    chain.mine()
    assert chain.wait_receipt(tx_hash)["status"] == "0x1"
    failing = send_failing_eth(chain, addr(0x501), 5)  # mines its own block when automine is off
    assert chain.wait_receipt(failing)["status"] == "0x0"
    assert chain.head() == start + 7


def test_build_bulk_chain_produces_the_expected_logs(devchain: DevChain) -> None:
    chain = devchain
    token = chain.deploy_token()
    recipients = [addr(0x1000 + i) for i in range(13)]
    start = chain.head() + 1  # the mint's block

    build_bulk_chain(chain, token, blocks=40, transfers_per_block=7, recipients=recipients)

    assert chain.head() == start + 40
    assert chain.automine()  # restored
    logs = chain.logs(start + 1, "latest", token)
    assert len(logs) == 40 * 7
    per_block: dict[str, int] = {}
    for log in logs:
        per_block[log["blockNumber"]] = per_block.get(log["blockNumber"], 0) + 1
    assert set(per_block.values()) == {7}
    assert len(per_block) == 40
    assert chain.token_balance(token, recipients[0]) == 1_000 * 22  # 280 transfers over 13


def test_fast_bulk_args_still_allow_reorgs() -> None:
    with DevChain.start(extra_args=FAST_BULK_ARGS) as chain:
        token = chain.deploy_token()
        build_bulk_chain(chain, token, 20, 5, [addr(0x3000 + i) for i in range(7)])
        old = chain.block(chain.head() - 9)["hash"]
        chain.reorg(10)
        assert chain.block(chain.head() - 9)["hash"] != old
        assert len(chain.logs(0, "latest", token)) == 1 + 20 * 5 - 10 * 5


def test_build_bulk_chain_splits_big_blocks_into_several_txs(devchain: DevChain) -> None:
    chain = devchain
    token = chain.deploy_token()
    chain.set_automine(False)
    build_bulk_chain(chain, token, 2, 450, [addr(0x2000 + i) for i in range(450)], amount=3)
    assert not chain.automine()
    for height in (chain.head() - 1, chain.head()):
        block = chain.block(height)
        assert len(block["transactions"]) == 3  # 200 + 200 + 50
        assert len(chain.logs(height, height, token)) == 450


def test_batch_calldata_matches_the_abi_encoder() -> None:
    recipients, amounts = [addr(i * 7919 + 1) for i in range(4)], [i * 10**18 + 3 for i in range(4)]
    expected = calldata(
        "batchTransfer(address[],uint256[])", ["address[]", "uint256[]"], [recipients, amounts]
    )
    assert batch_calldata(recipients, amounts) == expected


def test_rpc_errors_carry_the_node_message(anvil: Anvil) -> None:
    with pytest.raises(RpcResponseError) as caught:
        anvil.rpc("eth_noSuchMethod")
    assert isinstance(caught.value, ScannerError)  # the one exception tree
    assert caught.value.code == -32601
    assert caught.value.method == "eth_noSuchMethod"
    assert anvil.rpc("eth_chainId") == hex(31337)
    assert anvil.rpc_batch([("eth_chainId", []), ("eth_blockNumber", [])]) == ["0x7a69", "0x0"]


def test_anvil_start_options_and_stop() -> None:
    with Anvil.start(chain_id=1337, block_time=0.2) as node:
        assert node.rpc("eth_chainId") == hex(1337)
        assert node.url == f"http://127.0.0.1:{node.port}"
        time.sleep(0.5)
        assert int(node.rpc("eth_blockNumber"), 16) >= 1  # mined on the timer
        pid = node.pid
    assert not node.running
    assert not _alive(pid)


def test_dump_and_load_state(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with DevChain.start(dump_state=str(state)) as chain:
        token = chain.deploy_token()
        chain.wait_receipt(chain.mint(token, addr(0x600), 42))
        head = chain.head()
    with DevChain.start(load_state=str(state)) as chain:
        assert chain.head() == head
        assert len(chain.logs(0, "latest", token)) == 1


def test_a_bad_argument_fails_fast_with_the_log_tail() -> None:
    with pytest.raises(AnvilStartError, match="exited with code"):
        Anvil.start(extra_args=["--no-such-flag"])


def test_find_anvil_explains_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANVIL_BIN", "/opt/custom/anvil")
    assert node_module.find_anvil() == "/opt/custom/anvil"
    monkeypatch.delenv("ANVIL_BIN")
    monkeypatch.setattr(node_module, "NPM_ANVIL", tmp_path / "missing")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AnvilStartError, match="npm ci --prefix devchain"):
        node_module.find_anvil()


def test_a_busy_port_is_an_error_not_another_node(anvil: Anvil) -> None:
    with pytest.raises(AnvilStartError, match="Address already in use"):
        Anvil.start(port=anvil.port, chain_id=5)


def test_a_lost_port_race_is_retried_on_another_port(
    anvil: Anvil,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    picked: list[int] = []

    def racy_free_port() -> int:  # the first "free" port is taken by the time anvil binds it
        picked.append(real_free_port() if picked else anvil.port)
        return picked[-1]

    monkeypatch.setattr(node_module, "free_port", racy_free_port)
    with Anvil.start(chain_id=5) as node:
        assert picked[0] == anvil.port
        assert node.port == picked[1] != anvil.port
        assert node.rpc("eth_chainId") == "0x5"


async def test_async_start_and_stop() -> None:
    async with await Anvil.astart() as node:
        assert node.rpc("eth_chainId") == "0x7a69"
    assert not node.running


def test_node_dies_with_its_parent_process() -> None:
    code = (
        "import time; from scanner.devchain import Anvil; "
        "node = Anvil.start(); print(node.pid, node.log_path.parent, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    with parent.stdout:
        pid_text, workdir = parent.stdout.readline().split()
    pid = int(pid_text)
    assert _alive(pid)
    parent.kill()
    parent.wait()
    until_sync(lambda: not _alive(pid), 5, "the orphaned node gone")
    shutil.rmtree(workdir)  # the killed parent could not clean up after its node


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and os.path.exists(f"/proc/{pid}")
