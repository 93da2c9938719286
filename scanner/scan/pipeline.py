"""Reading ranges ahead, concurrently and bounded, while committing them strictly in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
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
    pending: deque[asyncio.Task[T]] = deque()
    queue = deque(ranges)
    try:
        while queue or pending:
            while queue and len(pending) < max(1, concurrency):
                start, end = queue.popleft()
                pending.append(asyncio.ensure_future(fetch(start, end)))
            yield await pending.popleft()
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
