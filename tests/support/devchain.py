"""Test-only actions on a dev chain: wrong-shaped Transfer logs, failed ETH payments, web3.

The demo and the benchmarks never need these; the contracts (OddEmitter, Reverter) are committed
beside the TestToken in ``scanner/devchain/artifacts``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from web3 import HTTPProvider, Web3

from scanner.devchain import DevChain, load_artifact
from scanner.devchain.contracts import calldata

ETHER = 10**18
FAILING_TX_GAS = 100_000


@contextmanager
def web3_client(chain: DevChain) -> Iterator[Web3]:
    """A synchronous web3.py client of the chain's node, its HTTP session closed on exit."""
    with requests.Session() as session:
        yield Web3(HTTPProvider(chain.url, session=session))


def deploy_odd_emitter(chain: DevChain) -> str:
    """Deploy OddEmitter (wrong-shaped Transfer logs); needs automine."""
    return chain.deploy("OddEmitter")


def emit_721(chain: DevChain, emitter: str, sender: str, to: str, token_id: int) -> str:
    """OddEmitter: Transfer with 4 topics (tokenId indexed) and empty data."""
    data = calldata(
        "emit721(address,address,uint256)",
        ["address", "address", "uint256"],
        [sender, to, token_id],
    )
    return chain.send_transaction({"to": emitter, "data": data})


def emit_long_data(chain: DevChain, emitter: str, sender: str, to: str, a: int, b: int) -> str:
    """OddEmitter: Transfer with 3 topics and 64 bytes of data."""
    data = calldata(
        "emitLongData(address,address,uint256,uint256)",
        ["address", "address", "uint256", "uint256"],
        [sender, to, a, b],
    )
    return chain.send_transaction({"to": emitter, "data": data})


def send_failing_eth(
    chain: DevChain, to: str | None = None, value: int = ETHER, *, sender: str | None = None
) -> str:
    """Mine a top-level tx carrying `value` wei to `to` whose receipt status is 0.

    `to` (say a watched EOA) is given the Reverter's runtime code for this one
    transaction (`anvil_setCode`), then its old code is put back, so an EOA looks like
    an EOA again. With no `to`, a fresh random address keeps the Reverter code. Gas is
    explicit (no estimate). If automine is off, one block is mined to include it.
    """
    target = (to or "0x" + os.urandom(20).hex()).lower()
    old_code = chain.code(target)
    chain.rpc("anvil_setCode", [target, _reverter_runtime(chain)])
    try:
        tx = {"from": sender or chain.deployer, "to": target, "value": value, "gas": FAILING_TX_GAS}
        tx_hash = chain.send_transaction(tx)
        if not chain.automine():
            chain.mine()
        chain.wait_receipt(tx_hash)
    finally:
        if to is not None:
            chain.rpc("anvil_setCode", [target, old_code])
    return tx_hash


def _reverter_runtime(chain: DevChain) -> str:
    """Reverter's deployed code: what its creation code returns (an eth_call, no tx)."""
    creation = {"from": chain.deployer, "data": load_artifact("Reverter")["bytecode"]}
    return str(chain.rpc("eth_call", [creation, "latest"]))
