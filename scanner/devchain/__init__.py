"""A real local test chain (anvil) and test ERC-20 contracts for tests, the demo and benchmarks.

- :mod:`~scanner.devchain.node`: the anvil process and JSON-RPC to it (`Anvil`).
- :mod:`~scanner.devchain.actions`: sending, ETH, mining, time, snapshots, reorgs (`ChainActions`).
- :mod:`~scanner.devchain.contracts`: the committed contracts, ERC-20 calls, bulk chains
  (`DevChain`, `build_bulk_chain`).
"""

from scanner.devchain.actions import ChainActions
from scanner.devchain.contracts import FAST_BULK_ARGS, DevChain, build_bulk_chain, load_artifact
from scanner.devchain.node import Anvil, AnvilStartError, find_anvil

__all__ = [
    "FAST_BULK_ARGS",
    "Anvil",
    "AnvilStartError",
    "ChainActions",
    "DevChain",
    "build_bulk_chain",
    "find_anvil",
    "load_artifact",
]
