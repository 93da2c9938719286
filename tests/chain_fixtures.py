"""Pytest fixtures for a real local chain (anvil). Needs `npm ci --prefix tests/chain`.

Import the fixtures you use into a test module (not via `pytest_plugins`)::

    from tests.chain_fixtures import anvil, devchain, module_devchain  # noqa: F401

- `anvil`: a fresh node per test (dies with the test process: PR_SET_PDEATHSIG).
- `devchain`: a `DevChain` over that node; tests may reorg, revert, change time freely.
- `module_devchain`: one node shared by a module's tests; do not rewind it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scanner.devchain import Anvil, DevChain


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    node = Anvil.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def devchain(anvil: Anvil) -> Iterator[DevChain]:
    chain = DevChain(anvil)
    try:
        yield chain
    finally:
        chain.close()


@pytest.fixture(scope="module")
def module_devchain() -> Iterator[DevChain]:
    with DevChain.start() as chain:
        yield chain
