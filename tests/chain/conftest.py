"""Fixtures for the node-adapter tests: an observer that records, fast retries, a proxied node.

The node is a real anvil (``tests.chain_fixtures``); the proxy (``tests.support.proxy``) sits
in front of it to inject faults. Client URLs carry a fake API key in the path, which the proxy
ignores, so every test also exercises redaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from scanner.chain.reader import ChainReader
from scanner.chain.retrying import Backoff
from scanner.chain.rpc import RpcClient
from scanner.devchain import Anvil
from tests.support.proxy import FaultProxy

SECRET = "SECRETKEY123"
FAST = Backoff(initial=0.005, maximum=0.02, max_retry_after=5.0)


@dataclass
class Recorder:
    """An RpcObserver that keeps everything it is told."""

    done: list[tuple[str, str, str, float]] = field(default_factory=list)
    retries: list[tuple[str, str, int, Exception]] = field(default_factory=list)

    def request_done(self, chain: str, method: str, outcome: str, seconds: float) -> None:
        self.done.append((chain, method, outcome, seconds))

    def retried(self, chain: str, method: str, attempt: int, error: Exception) -> None:
        self.retries.append((chain, method, attempt, error))

    @property
    def outcomes(self) -> list[str]:
        return [d[2] for d in self.done]


def keyed(url: str) -> str:
    """``url`` with an API key in the path, as providers hand them out."""
    return f"{url}/v3/{SECRET}"


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def proxy(anvil: Anvil) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(anvil.url) as p:
        yield p


@pytest.fixture
async def client(proxy: FaultProxy, recorder: Recorder) -> AsyncIterator[RpcClient]:
    async with RpcClient(
        "testchain",
        [keyed(proxy.url)],
        timeout=5.0,
        max_attempts=4,
        observer=recorder,
        backoff=FAST,
    ) as c:
        yield c


@pytest.fixture
def reader(client: RpcClient) -> ChainReader:
    return ChainReader(client)
