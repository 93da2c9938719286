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
    linger: Callable[[T], float] | None = None,
) -> AsyncGenerator[list[T], None]:
    """As :func:`prefetch`, but each step yields the next read together with the reads after
    it that are already in (in order; with ``ready`` False, the next read alone): the consumer
    may commit them at once, and never waits long for a read still under way to do so. A read
    that failed is raised at its own turn: the reads before it are yielded first.

    ``linger(first)``: for how long, as a fraction of the time the step's first read took, the
    step waits for the reads under way before it is yielded (reads started together come in
    together; a read that stalls is waited for no longer than that). 0, or no ``linger``: not
    at all."""
    loop = asyncio.get_running_loop()
    pending: deque[tuple[asyncio.Task[T], float]] = deque()
    queue = deque(ranges)

    def refill() -> None:
        while queue and len(pending) < max(1, concurrency):
            start, end = queue.popleft()
            pending.append((asyncio.ensure_future(fetch(start, end)), loop.time()))

    try:
        while queue or pending:
            refill()
            task, started = pending.popleft()
            batch = [await task]
            if ready and linger is not None and pending and not pending[0][0].done():
                wait = linger(batch[0]) * (loop.time() - started)
                if wait > 0:
                    await asyncio.wait([t for t, _ in pending], timeout=wait)
            while ready and pending and _succeeded(pending[0][0]):
                batch.append(pending.popleft()[0].result())
            refill()  # the reads ahead go on while the consumer commits these
            yield batch
    finally:
        for task, _ in pending:
            task.cancel()
        for task, _ in pending:
            with contextlib.suppress(BaseException):
                await task


def _succeeded(task: asyncio.Task[T]) -> bool:
    """Done with a result: a read that failed is raised when its own turn comes, after the
    reads before it are yielded."""
    return task.done() and not task.cancelled() and task.exception() is None
