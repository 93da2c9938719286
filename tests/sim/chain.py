"""The simulation's chain: an anvil node whose blocks the schedule mines one by one, on a clock of
its own, and reorganizes at any depth while keeping what must stay.

- Blocks are mined on demand (automine off), ``BLOCK_SECONDS`` apart in chain time; a snapshot is
  taken after each of the newest blocks, so that a reorg of depth ``d`` reverts to the block below
  them and mines them again (``evm_revert``), with the same timestamps and another coinbase, so
  that every replaced block gets a new hash.
- A reorg keeps the content of the blocks that the scanner may already count as final (those at
  least ``confirmations`` deep: a reorg of them is a finality violation the oracle could not
  judge from the final chain alone) and shuffles the newer ones: each transaction stays, moves to
  a later block of the reorg, or is dropped (with every later transaction of its sender there).
- What the oracle reads at the end comes from the node: every block's timestamp and hash, the
  tokens' Transfer logs, the native transfers to watched addresses with their receipts' status.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scanner.devchain import DevChain, load_artifact
from scanner.devchain.contracts import calldata

BLOCK_SECONDS = 12
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
FAILING_GAS = 120_000


@dataclass(frozen=True)
class ChainTransfer:
    """A transfer on the final chain: ``token`` None for the native coin."""

    token: str | None
    to: str
    value: int
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int  # -1 for a native transfer


@dataclass(frozen=True)
class Reorg:
    """A reorg the simulation made: the heights it replaced and how deep it was."""

    first: int
    last: int

    @property
    def depth(self) -> int:
        return self.last - self.first + 1


@dataclass
class SimChain:
    """An anvil node driven block by block (see the module docstring)."""

    chain: DevChain
    keep_snapshots: int
    confirmations: int
    timestamp: int = 0
    snapshots: dict[int, str] = field(default_factory=dict)
    reorgs: list[Reorg] = field(default_factory=list)

    def start(self) -> None:
        """Automine off; the clock from the newest block; the first snapshot."""
        self.chain.set_automine(False)
        self.timestamp = int(self.chain.block("latest")["timestamp"], 16)
        self.snapshots[self.chain.head()] = self.chain.snapshot()

    def head(self) -> int:
        return self.chain.head()

    # -- mining ------------------------------------------------------------------------------

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` blocks (pending transactions go into the first), one snapshot each
        for the newest ones (the older ones in one call: an outage mines hundreds)."""
        bulk = max(0, blocks - self.keep_snapshots)
        if bulk:
            self.chain.set_next_timestamp(self.timestamp + BLOCK_SECONDS)
            self.chain.mine(bulk, BLOCK_SECONDS)
            # anvil adds the wall-clock seconds its mining took to the blocks after the first
            # (hundreds of blocks on a loaded machine: more than a block's interval), so the
            # clock goes on from the newest block's own time
            self.timestamp = int(self.chain.block("latest")["timestamp"], 16)
        for _ in range(blocks - bulk):
            self._mine_one(self.timestamp + BLOCK_SECONDS)

    def _mine_one(self, timestamp: int) -> None:
        self.chain.set_next_timestamp(timestamp)
        self.chain.rpc("evm_mine")
        self.timestamp = timestamp
        head = self.chain.head()
        self.snapshots[head] = self.chain.snapshot()
        for old in [h for h in self.snapshots if h < head - self.keep_snapshots]:
            del self.snapshots[old]

    # -- sending -----------------------------------------------------------------------------

    def send(self, tx: dict[str, Any]) -> str:
        """Send a transaction into the pool (mined by the next :meth:`mine`)."""
        return self.chain.send_transaction(tx)

    def transfer(self, token: str, sender: str, to: str, value: int) -> str:
        return self.chain.transfer(token, sender, to, value)

    def batch(
        self, token: str, sender: str, recipients: Sequence[str], values: Sequence[int]
    ) -> str:
        return self.chain.batch_transfer(token, sender, recipients, values)

    def failing_transfer(self, token: str, sender: str, to: str, value: int) -> str:
        """A token transfer that reverts (``sender`` holds none of the token): no log."""
        data = calldata("transfer(address,uint256)", ["address", "uint256"], [to, value])
        return self.send({"from": sender, "to": token, "data": data, "gas": FAILING_GAS})

    def send_eth(self, sender: str, to: str, value: int, *, gas: int | None = None) -> str:
        tx: dict[str, Any] = {"from": sender, "to": to, "value": value}
        if gas is not None:
            tx["gas"] = gas
        return self.send(tx)

    def make_reverting(self, addresses: Iterable[str]) -> None:
        """Give ``addresses`` code that reverts every call: native payments to them fail. Done
        before the first snapshot, so that no reorg takes it away."""
        creation = {"from": self.chain.deployer, "data": load_artifact("Reverter")["bytecode"]}
        runtime = self.chain.rpc("eth_call", [creation, "latest"])
        for address in addresses:
            self.chain.rpc("anvil_setCode", [address, runtime])

    # -- reorgs ------------------------------------------------------------------------------

    def reorg(self, depth: int, rng: random.Random) -> Reorg:
        """Replace the newest ``depth`` blocks (see the module docstring); the head stays."""
        head = self.chain.head()
        base = head - depth
        if base not in self.snapshots:
            raise ValueError(f"no snapshot at {base}: a reorg of {depth} is too deep here")
        settled = head - self.confirmations + 1  # blocks at or below may already be final
        blocks = [self.chain.block(n, full=True) for n in range(base + 1, head + 1)]
        plan = _reorg_plan(blocks, settled, rng)
        raws = {tx: self.chain.raw_tx(tx) for txs in plan for tx in txs}
        if not self.chain.revert(self.snapshots[base]):
            raise RuntimeError(f"evm_revert to block {base} failed")
        self.snapshots = {h: s for h, s in self.snapshots.items() if h < base}
        self.snapshots[base] = self.chain.snapshot()
        for block, txs in zip(blocks, plan, strict=True):
            self.chain.rpc("anvil_setCoinbase", ["0x" + os.urandom(20).hex()])
            for tx in txs:
                self.chain.rpc("eth_sendRawTransaction", [raws[tx]])
            self._mine_one(int(block["timestamp"], 16))
        done = Reorg(base + 1, head)
        self.reorgs.append(done)
        return done

    # -- the final chain ---------------------------------------------------------------------

    def timestamps(self) -> dict[int, int]:
        return {n: int(self.chain.block(n)["timestamp"], 16) for n in range(self.head() + 1)}

    def token_transfers(self, tokens: Sequence[str]) -> list[ChainTransfer]:
        """Every standard Transfer log of ``tokens`` on the final chain."""
        logs = self.chain.logs(0, "latest", address=list(tokens), topics=[TRANSFER_TOPIC])
        out = []
        for log in logs:
            if len(log["topics"]) != 3 or len(log["data"]) != 66:
                continue
            out.append(
                ChainTransfer(
                    token=log["address"].lower(),
                    to="0x" + log["topics"][2][-40:].lower(),
                    value=int(log["data"], 16),
                    block_number=int(log["blockNumber"], 16),
                    block_hash=log["blockHash"],
                    tx_hash=log["transactionHash"],
                    log_index=int(log["logIndex"], 16),
                )
            )
        return out

    def native_transfers(self, watched: set[str]) -> list[ChainTransfer]:
        """Top-level transactions with value to a ``watched`` address whose receipt succeeded."""
        out = []
        for n in range(self.head() + 1):
            block = self.chain.block(n, full=True)
            for tx in block["transactions"]:
                to = (tx.get("to") or "").lower()
                if to not in watched or int(tx["value"], 16) == 0:
                    continue
                receipt = self.chain.receipt(tx["hash"])
                if receipt is None or int(receipt["status"], 16) != 1:
                    continue
                out.append(
                    ChainTransfer(None, to, int(tx["value"], 16), n, block["hash"], tx["hash"], -1)
                )
        return out


def _reorg_plan(
    blocks: Sequence[dict[str, Any]], settled: int, rng: random.Random
) -> list[list[str]]:
    """Which transactions each replaced block gets: settled blocks keep theirs; a newer one's
    stay, move later or drop, a sender's nonces kept in order."""
    plan: list[list[str]] = [[] for _ in blocks]
    last_slot: dict[str, int] = {}
    dropped: set[str] = set()
    for slot, block in enumerate(blocks):
        for tx in block["transactions"]:
            sender = tx["from"].lower()
            if int(block["number"], 16) <= settled:
                plan[slot].append(tx["hash"])
                last_slot[sender] = slot
                continue
            roll = rng.random()
            if sender in dropped or roll < 0.25:
                dropped.add(sender)
                continue
            target = slot if roll < 0.6 else rng.randrange(slot, len(blocks))
            target = max(target, last_slot.get(sender, 0))
            plan[target].append(tx["hash"])
            last_slot[sender] = target
    return plan
