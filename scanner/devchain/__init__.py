"""A real local test chain (anvil) and test ERC-20 contracts for tests, the demo and benchmarks."""

from scanner.devchain.anvil import (
    FAST_BULK_ARGS,
    Anvil,
    AnvilStartError,
    DevChain,
    RpcError,
    build_bulk_chain,
    find_anvil,
    load_artifact,
)

__all__ = [
    "FAST_BULK_ARGS",
    "Anvil",
    "AnvilStartError",
    "DevChain",
    "RpcError",
    "build_bulk_chain",
    "find_anvil",
    "load_artifact",
]
