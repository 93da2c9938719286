"""A node that stalls: it answers, says it is synced, and its head does not move.

The head is judged by its block's timestamp against the wall clock: older than ``stall_after``
seconds, the node is stalled. ``stall_after`` is a chain setting; unset, it is derived from the
chain's block time, measured once over the last 64 blocks: ``max(60, 30 × block time)`` (6
minutes on Ethereum, 1 minute on a 2-second chain). A clock or a chain that runs ahead (a dev
chain whose time was moved forward) is never stalled.

:class:`HeadWatch` reads the head for the live scan. A stalled URL is logged (``node_stalled``),
counted (``scanner_node_stalls_total``) and failed over to the next configured URL, which is
read at once. When every URL is stalled, the chain waits on the newest head it has (it scans
what that node can show, skips nothing), says so (``nodes_stalled``), shows it in ``/readyz``
and ``scanner_chain_stalled``, and checks again on the next tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import structlog

from scanner.chain.reader import ChainReader
from scanner.core.model import Header

MIN_STALL_SECONDS = 60.0
STALL_BLOCK_TIMES = 30
BLOCK_TIME_SPAN = 64

log = structlog.get_logger(__name__)


class StallObserver(Protocol):
    """Where stalls are counted (the metrics)."""

    def node_stalled(self, chain: str) -> None: ...

    def set_stalled(self, chain: str, stalled: bool) -> None: ...


def derived_stall_after(block_time: float) -> float:
    """The default ``stall_after`` for a chain with this block time (seconds)."""
    return max(MIN_STALL_SECONDS, STALL_BLOCK_TIMES * block_time)


class HeadWatch:
    """The head of one chain, read through the reader's client, stalled URLs failed over."""

    def __init__(
        self,
        reader: ChainReader,
        stall_after: float | None,
        *,
        observer: StallObserver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reader = reader
        self.chain = reader.chain
        self.stall_after = stall_after
        self.observer = observer
        self.clock = clock
        self.stalled: str | None = None  # why, while every URL is stalled
        self._stalled_urls: set[str] = set()

    async def read(self) -> int:
        """The head's number, from the first URL whose head is fresh (else the newest)."""
        client = self.reader.client
        newest: Header | None = None
        for _ in range(len(client.urls)):
            header = await self.reader.latest_header()
            limit = await self.limit(header)
            age = self.clock() - header.timestamp
            if age <= limit:
                self._fresh(client.active_url)
                return header.number
            self._stale(client.active_url, header, age, limit)
            if newest is None or header.number > newest.number:
                newest = header
            if not client.use_next_url():
                break
        assert newest is not None
        self._all_stalled(newest, self.clock() - newest.timestamp)
        return newest.number

    async def limit(self, head: Header) -> float:
        """``stall_after``: configured, or derived from the block time once."""
        if self.stall_after is None:
            span = min(BLOCK_TIME_SPAN, head.number)
            block_time = 0.0
            if span > 0:
                (old,) = await self.reader.headers(head.number - span, head.number - span)
                block_time = max(0.0, (head.timestamp - old.timestamp) / span)
            self.stall_after = derived_stall_after(block_time)
            log.info("stall_after_derived", chain=self.chain, seconds=self.stall_after)
        return self.stall_after

    def _fresh(self, url: str) -> None:
        if url in self._stalled_urls:
            self._stalled_urls.discard(url)
            log.info("node_moving_again", chain=self.chain, url=url)
        if self.stalled is not None:
            self.stalled = None
            log.info("nodes_stalled_over", chain=self.chain, url=url)
            if self.observer is not None:
                self.observer.set_stalled(self.chain, False)

    def _stale(self, url: str, head: Header, age: float, limit: float) -> None:
        if url in self._stalled_urls:
            return
        self._stalled_urls.add(url)
        log.warning(
            "node_stalled",
            chain=self.chain,
            url=url,
            head=head.number,
            head_age_seconds=round(age, 1),
            stall_after=limit,
        )
        if self.observer is not None:
            self.observer.node_stalled(self.chain)

    def _all_stalled(self, newest: Header, age: float) -> None:
        reason = (
            f"every RPC URL is stalled; newest head {newest.number} is {age:.0f} s old, "
            "waiting for a node to move"
        )
        if self.stalled is None:
            log.error(
                "nodes_stalled", chain=self.chain, head=newest.number, urls=len(self._stalled_urls)
            )
            if self.observer is not None:
                self.observer.set_stalled(self.chain, True)
        self.stalled = reason
