"""What happens on a dev chain: sending transactions and ETH, mining, time, snapshots, reorgs.

`ChainActions` wraps one :class:`~scanner.devchain.node.Anvil`; :class:`~scanner.devchain.
contracts.DevChain` adds the committed test contracts on top. Addresses returned are
lower-case hex; transaction hashes are 0x-hex strings; blocks, receipts and logs are the
node's raw JSON (hex quantities).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Self

from scanner.devchain.node import POLL_INTERVAL_S, Anvil

RECEIPT_TIMEOUT_S = 5.0
ETHER = 10**18
GAS_TOP_UP_WEI = 10 * ETHER
MIN_GAS_BALANCE_WEI = ETHER // 10


def hexify(value: Any) -> Any:
    """An int as a JSON-RPC hex quantity; anything else (a tag, a hash) as it is."""
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    return hex(value)


def rpc_tx(tx: Mapping[str, Any]) -> dict[str, Any]:
    """A transaction for JSON-RPC: ints become hex quantities."""
    return {key: hexify(value) for key, value in tx.items()}


def _tx_block_pair(item: tuple[Any, int]) -> list[Any]:
    tx, offset = item
    return [tx if isinstance(tx, str) else rpc_tx(tx), offset]


class ChainActions:
    """Accounts, transactions, ETH, blocks, time, snapshots and reorgs on one anvil node."""

    def __init__(self, anvil: Anvil, *, owns_node: bool = False) -> None:
        self.anvil = anvil
        self.accounts: list[str] = [a.lower() for a in anvil.rpc("eth_accounts")]
        self._owns_node = owns_node
        self._impersonated: set[str] = set()

    @classmethod
    def start(cls, **anvil_options: Any) -> Self:
        """Start a fresh node (options as `Anvil.start`) owned by this chain."""
        return cls(Anvil.start(**anvil_options), owns_node=True)

    def close(self) -> None:
        """Stop the node if this chain started it."""
        if self._owns_node:
            self.anvil.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.anvil.url

    @property
    def deployer(self) -> str:
        """Unlocked dev account 0; deploys contracts and holds minted bulk tokens."""
        return self.accounts[0]

    def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        return self.anvil.rpc(method, params)

    # ---- sending

    def ensure_sender(self, address: str) -> str:
        """Let `address` send: dev accounts are unlocked, others get impersonated (+ gas money)."""
        sender = address.lower()
        if sender in self.accounts:
            return sender
        if sender not in self._impersonated:
            self.rpc("anvil_impersonateAccount", [sender])
            self._impersonated.add(sender)
        balance = self.balance(sender)  # checked each time: a revert may have undone a top-up
        if balance < MIN_GAS_BALANCE_WEI:
            self.set_balance(sender, balance + GAS_TOP_UP_WEI)
        return sender

    def send_transaction(self, tx: Mapping[str, Any]) -> str:
        """`eth_sendTransaction` from any address (default: the deployer); returns the hash.

        With automine on, returns once the transaction is mined: anvil answers the send before
        the block exists now and then, and a scan started right after would miss the block.
        """
        request = rpc_tx(tx)
        request["from"] = self.ensure_sender(str(tx.get("from", self.deployer)))
        tx_hash: str = self.rpc("eth_sendTransaction", [request])
        if self.automine():
            self.wait_receipt(tx_hash)
        return tx_hash

    def wait_receipt(self, tx_hash: str, timeout: float = RECEIPT_TIMEOUT_S) -> dict[str, Any]:
        """The receipt of a transaction that automine is about to mine (or has mined)."""
        deadline = time.monotonic() + timeout
        while (found := self.receipt(tx_hash)) is None:
            if not self.automine() or time.monotonic() > deadline:
                raise TimeoutError(f"{tx_hash} not mined (automine off? call mine())")
            time.sleep(POLL_INTERVAL_S / 4)
        return found

    # ---- ETH

    def balance(self, address: str, block: int | str = "latest") -> int:
        return int(self.rpc("eth_getBalance", [address, hexify(block)]), 16)

    def set_balance(self, address: str, wei: int) -> None:
        self.rpc("anvil_setBalance", [address, hex(wei)])

    def code(self, address: str, block: int | str = "latest") -> str:
        result: str = self.rpc("eth_getCode", [address, hexify(block)])
        return result

    def send_eth(self, sender: str, to: str, value_wei: int) -> str:
        return self.send_transaction({"from": sender, "to": to, "value": value_wei})

    # ---- blocks and time

    def mine(self, n: int = 1, interval: int | None = None) -> None:
        """Mine `n` blocks (pending txs go into the first), `interval` seconds apart."""
        params = [hex(n)] if interval is None else [hex(n), hex(interval)]
        self.rpc("anvil_mine", params)

    def automine(self) -> bool:
        return bool(self.rpc("anvil_getAutomine"))

    def set_automine(self, enabled: bool) -> None:
        self.rpc("evm_setAutomine", [enabled])

    def set_next_timestamp(self, ts: int) -> None:
        self.rpc("evm_setNextBlockTimestamp", [ts])

    def increase_time(self, seconds: int) -> None:
        self.rpc("evm_increaseTime", [seconds])

    def head(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def block(self, n: int | str = "latest", full: bool = False) -> dict[str, Any]:
        found: dict[str, Any] | None = self.rpc("eth_getBlockByNumber", [hexify(n), full])
        if found is None:
            raise LookupError(f"no block {n}")
        return found

    # ---- rewinding

    def snapshot(self) -> str:
        snap_id: str = self.rpc("evm_snapshot")
        return snap_id

    def revert(self, snap_id: str) -> bool:
        return bool(self.rpc("evm_revert", [snap_id]))

    def reorg(self, depth: int, txs: Sequence[tuple[str | Mapping[str, Any], int]] = ()) -> None:
        """Replace the last `depth` blocks (same heights, new hashes) via `anvil_reorg`.

        Each item is (raw signed tx hex, e.g. from `raw_tx`, or a tx dict; block offset
        0..depth-1 from the first replaced block).
        """
        self.rpc("anvil_reorg", [depth, [_tx_block_pair(item) for item in txs]])

    # ---- reads

    def raw_tx(self, tx_hash: str) -> str:
        raw: str | None = self.rpc("eth_getRawTransactionByHash", [tx_hash])
        if raw is None:
            raise LookupError(f"no transaction {tx_hash}")
        return raw

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.rpc("eth_getTransactionReceipt", [tx_hash])
        return found

    def logs(
        self,
        from_block: int | str = 0,
        to_block: int | str = "latest",
        address: str | Sequence[str] | None = None,
        topics: Sequence[Any] | None = None,
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"fromBlock": hexify(from_block), "toBlock": hexify(to_block)}
        if address is not None:
            query["address"] = address
        if topics is not None:
            query["topics"] = list(topics)
        found: list[dict[str, Any]] = self.rpc("eth_getLogs", [query])
        return found
