"""The committed test contracts on a dev chain: artifacts, deploys, ERC-20 calls, bulk chains.

The artifacts (ABI + bytecode) are compiled by ``devchain/build.js`` into ``artifacts/``.
`DevChain` is :class:`~scanner.devchain.actions.ChainActions` plus the TestToken: deploy it, mint,
transfer, pay many holders in one transaction. `build_bulk_chain` fills a chain with many
Transfer logs quickly (benchmarks, tests).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.abi import function_signature_to_4byte_selector

from scanner.devchain.actions import ChainActions, hexify

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
BATCH_TX_BASE_GAS = 60_000
BATCH_GAS_PER_TRANSFER = 35_000
MAX_TRANSFERS_PER_TX = 200
BATCH_TRANSFER_SELECTOR = function_signature_to_4byte_selector("batchTransfer(address[],uint256[])")

# anvil options that build bulk chains ~30% faster (1,000 blocks x 20 transfers: ~5.3 s
# instead of ~7.4 s): cancun skips the per-block EIP-2935 history-contract writes of the
# default hardfork, and only the last 128 states are kept, in memory. Blocks, receipts and
# logs stay; calls against older state fail, and `anvil_reorg` works up to ~128 blocks deep
# (a bare `--prune-history` makes every `anvil_reorg` fail: "Required data unavailable").
FAST_BULK_ARGS: tuple[str, ...] = ("--hardfork", "cancun", "--prune-history", "128")


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """ABI and bytecode of a committed contract artifact (TestToken, OddEmitter, Reverter)."""
    data: dict[str, Any] = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
    return data


def calldata(signature: str, types: Sequence[str], args: Sequence[Any]) -> str:
    """ABI-encoded call data for `signature`, e.g. ``calldata("mint(address,uint256)", ...)``."""
    selector = function_signature_to_4byte_selector(signature)
    return "0x" + (selector + abi_encode(list(types), list(args))).hex()


def _word(value: int) -> str:
    return f"{value:064x}"


def batch_calldata(recipients: Sequence[str], amounts: Sequence[int]) -> str:
    """`batchTransfer(address[],uint256[])` call data, encoded by hand (bulk builds are hot)."""
    if len(recipients) != len(amounts):
        raise ValueError("recipients and amounts differ in length")
    n = len(recipients)
    head = _word(0x40) + _word(0x60 + 0x20 * n)
    addresses = "".join(_word(int(a, 16)) for a in recipients)
    values = "".join(_word(v) for v in amounts)
    return f"0x{BATCH_TRANSFER_SELECTOR.hex()}{head}{_word(n)}{addresses}{_word(n)}{values}"


def batch_gas(transfers: int) -> int:
    """A generous gas limit for `batchTransfer` to `transfers` (possibly new) holders."""
    return BATCH_TX_BASE_GAS + BATCH_GAS_PER_TRANSFER * transfers


class DevChain(ChainActions):
    """A dev chain with the committed contracts: deploys and TestToken calls."""

    def deploy(
        self, name: str, constructor_types: Sequence[str] = (), args: Sequence[Any] = ()
    ) -> str:
        """Deploy the artifact `name` (needs automine); returns its lower-case address."""
        data = (
            load_artifact(name)["bytecode"] + abi_encode(list(constructor_types), list(args)).hex()
        )
        receipt = self.wait_receipt(self.send_transaction({"data": data}))
        if receipt["status"] != "0x1" or not receipt.get("contractAddress"):
            raise RuntimeError(f"deploying {name} failed: {receipt}")
        return str(receipt["contractAddress"]).lower()

    def deploy_token(self, name: str = "Test USD", symbol: str = "TUSD", decimals: int = 6) -> str:
        """Deploy a TestToken (needs automine); returns its lower-case address."""
        return self.deploy("TestToken", ["string", "string", "uint8"], [name, symbol, decimals])

    def call(self, to: str, data: str, block: int | str = "latest") -> str:
        result: str = self.rpc("eth_call", [{"to": to, "data": data}, hexify(block)])
        return result

    def token_decimals(self, token: str) -> int:
        return int(self.call(token, calldata("decimals()", [], [])), 16)

    def token_balance(self, token: str, holder: str) -> int:
        return int(self.call(token, calldata("balanceOf(address)", ["address"], [holder])), 16)

    def mint(self, token: str, to: str, amount: int) -> str:
        data = calldata("mint(address,uint256)", ["address", "uint256"], [to, amount])
        return self.send_transaction({"to": token, "data": data})

    def transfer(self, token: str, sender: str, to: str, amount: int) -> str:
        data = calldata("transfer(address,uint256)", ["address", "uint256"], [to, amount])
        return self.send_transaction({"from": sender, "to": token, "data": data})

    def batch_transfer(
        self, token: str, sender: str, recipients: Sequence[str], amounts: Sequence[int]
    ) -> str:
        """One tx, one standard Transfer log per recipient."""
        return self.send_transaction(
            {
                "from": sender,
                "to": token,
                "data": batch_calldata(recipients, amounts),
                "gas": batch_gas(len(recipients)),
            }
        )


# --------------------------------------------------------------------------- bulk


def _bulk_block_txs(
    token: str, sender: str, nonce: int, recipients: Sequence[str], amount: int
) -> list[tuple[str, Sequence[Any]]]:
    """`eth_sendTransaction` calls paying `recipients`, at most MAX_TRANSFERS_PER_TX per tx."""
    calls: list[tuple[str, Sequence[Any]]] = []
    for start in range(0, len(recipients), MAX_TRANSFERS_PER_TX):
        chunk = recipients[start : start + MAX_TRANSFERS_PER_TX]
        tx = {
            "from": sender,
            "to": token,
            "nonce": hex(nonce + len(calls)),
            "gas": hex(batch_gas(len(chunk))),
            "data": batch_calldata(chunk, [amount] * len(chunk)),
        }
        calls.append(("eth_sendTransaction", [tx]))
    return calls


def _raise_gas_limit(chain: DevChain, transfers_per_block: int) -> None:
    txs = -(-transfers_per_block // MAX_TRANSFERS_PER_TX)
    needed = batch_gas(MAX_TRANSFERS_PER_TX) * txs
    if needed > int(chain.block()["gasLimit"], 16):
        chain.rpc("evm_setBlockGasLimit", [hex(needed)])


def _check_bulk_block(chain: DevChain, block_number: int, expected_txs: int) -> None:
    block = chain.block(block_number)
    receipts = [chain.receipt(h) for h in block["transactions"]]
    if len(receipts) != expected_txs or any(r is None or r["status"] != "0x1" for r in receipts):
        raise RuntimeError(f"bulk block {block_number} has bad transactions: {receipts}")


def build_bulk_chain(
    chain: DevChain,
    token: str,
    blocks: int,
    transfers_per_block: int,
    recipients: Sequence[str],
    *,
    amount: int = 1_000,
) -> None:
    """Append `blocks` blocks, each with `transfers_per_block` Transfer logs of `token`.

    First one block with the deployer minting what it needs; then the deployer pays
    `recipients` in turn (cycling) with `batchTransfer` (at most MAX_TRANSFERS_PER_TX
    per tx), automine off, one `evm_mine` per block. The automine setting is restored.
    """
    if blocks <= 0 or transfers_per_block <= 0:
        return
    if not recipients:
        raise ValueError("recipients must not be empty")
    sender = chain.deployer
    _raise_gas_limit(chain, transfers_per_block)
    was_automine = chain.automine()
    chain.set_automine(False)
    try:
        mint_tx = chain.mint(token, sender, amount * blocks * transfers_per_block)
        chain.mine()
        if (chain.receipt(mint_tx) or {}).get("status") != "0x1":
            raise RuntimeError(f"bulk mint failed: {chain.receipt(mint_tx)}")
        _mine_bulk_blocks(chain, token, sender, blocks, transfers_per_block, recipients, amount)
    finally:
        chain.set_automine(was_automine)


def _mine_bulk_blocks(
    chain: DevChain,
    token: str,
    sender: str,
    blocks: int,
    per_block: int,
    recipients: Sequence[str],
    amount: int,
) -> None:
    nonce = int(chain.rpc("eth_getTransactionCount", [sender, "pending"]), 16)
    cursor = itertools.cycle(recipients)
    for index in range(blocks):
        calls = _bulk_block_txs(
            token, sender, nonce, [next(cursor) for _ in range(per_block)], amount
        )
        chain.anvil.rpc_batch(calls)
        chain.rpc("evm_mine")
        nonce += len(calls)
        if index == 0:
            _check_bulk_block(chain, chain.head(), len(calls))
