"""Reading ranges ahead, concurrently and bounded, while committing them strictly in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import TypeVar

T = TypeVar("T")


async def prefetch(
    ranges: Sequence[tuple[int, int]],
    fetch: Callable[[int, int], Awaitable[T]],
    concurrency: int,
) -> AsyncGenerator[T, None]:
    """Yield ``fetch(start, end)`` for each range, in order, with at most ``concurrency`` reads
    in flight. When the consumer stops early (or a read fails), the reads ahead are cancelled and
    awaited, so no task outlives the generator."""
    async with aclosing(prefetch_ready(ranges, fetch, concurrency, ready=False)) as reads:
        async for batch in reads:
            yield batch[0]


async def prefetch_ready(
    ranges: Sequence[tuple[int, int]],
    fetch: Callable[[int, int], Awaitable[T]],
    concurrency: int,
    *,
    ready: bool = True,
) -> AsyncGenerator[list[T], None]:
    """As :func:`prefetch`, but each step yields the next read together with the reads after
    it that are already in (in order; with ``ready`` False, the next read alone): the consumer
    may commit them at once, and never waits for a read still under way to do so."""
    pending: deque[asyncio.Task[T]] = deque()
    queue = deque(ranges)

    def refill() -> None:
        while queue and len(pending) < max(1, concurrency):
            start, end = queue.popleft()
            pending.append(asyncio.ensure_future(fetch(start, end)))

    try:
        while queue or pending:
            refill()
            batch = [await pending.popleft()]
            while ready and pending and pending[0].done():
                batch.append(pending.popleft().result())
            refill()  # the reads ahead go on while the consumer commits these
            yield batch
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
