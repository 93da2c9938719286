"""What a chain's live scan and its backfill are built from, handed over at construction.

    reader ─┐
    sessions├─▶ ChainParts ─▶ ChainScanner(parts) / Backfill(parts)
    fence  ─┘   (settings, metrics, verifier, sweep, read_head, stopping, clock)

Each part the app decides (the fence of the chain's lease or writer lock, the head read through a
stall watch, the shutdown flag) is given here, never set on the scanner after it is built. A
chain's kind (:class:`~scanner.core.kinds.ChainKind`: EVM, TRON) comes with its settings
(:attr:`ChainParts.kind`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scanner.chain.reader import ChainReader
from scanner.config import ChainSettings
from scanner.core.kinds import ChainKind
from scanner.core.ranges import RangeSizer
from scanner.observe.metrics import Metrics, NullMetrics
from scanner.scan.context import Fence

if TYPE_CHECKING:  # both import the scan modules that take these parts
    from scanner.scan.sweep import Sweep
    from scanner.scan.verify import Verifier


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class ChainParts:
    """One chain's collaborators: what a scanner or a backfill needs, nothing set later."""

    settings: ChainSettings
    reader: ChainReader
    sessions: async_sessionmaker[AsyncSession]
    metrics: Metrics = field(default_factory=NullMetrics)
    #: checked in every writing transaction: raises when this process lost the chain
    fence: Fence | None = None
    #: how long the server lets a chain transaction wait for this process (PostgreSQL): the
    #: lease's for a live scan; None: no limit for a live scan, a command's for a backfill
    idle_seconds: float | None = None
    #: ``verify_urls``: a second provider checks final credits before payments are confirmed
    verifier: Verifier | None = None
    #: final ranges read once more, after each tick, for logs a node left out
    sweep: Sweep | None = None
    #: where the head comes from (the app puts a stall watch in front of the reader)
    read_head: Callable[[], Awaitable[int]] | None = None
    #: checked between ranges: True once the process is stopping
    stopping: Callable[[], bool] = _never
    clock: Callable[[], float] = time.monotonic

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def kind(self) -> ChainKind:
        return self.settings.kind_rules


class OnChain:
    """The parts a chain's scanner and backfill share, unpacked once."""

    def __init__(self, parts: ChainParts, logger_name: str) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.reader = parts.reader
        self.sessions = parts.sessions
        self.metrics = parts.metrics
        self.fence = parts.fence
        self.idle_seconds = parts.idle_seconds
        self.sizer = RangeSizer(parts.settings.batch_size)
        self.log = structlog.get_logger(logger_name).bind(chain=parts.name)

    @property
    def name(self) -> str:
        return self.settings.name
