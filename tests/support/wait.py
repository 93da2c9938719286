"""The one way a test waits for what has no event to wait on: poll, never a fixed sleep.

One rule, for async tests (:func:`until`) and for sync ones or threads (:func:`until_sync`):
``check`` is called every ``every`` s until it returns something truthy, which is returned.
After ``within`` s the wait fails with an :class:`AssertionError` that names ``what``, the last
value ``check`` gave and, when given, what ``detail()`` says then (a log's tail, a row). An
exception of a type in ``ignoring`` counts as "not yet" (a server still starting); any other
propagates at once, so a check may assert what must hold meanwhile (the process still runs).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

WITHIN = 15.0  # seconds before a wait fails
EVERY = 0.02  # seconds between two checks

Errors = tuple[type[Exception], ...]


async def holds(check: Callable[[], Any]) -> Any:
    """``check()``, awaited when it is a coroutine function's."""
    value = check()
    if inspect.isawaitable(value):
        value = await value
    return value


class _Poll:
    """The rule's bookkeeping: the deadline, the last value seen, the message on timeout."""

    def __init__(self, within: float, what: str, ignoring: Errors) -> None:
        self.within, self.what, self.ignoring = within, what, ignoring
        self.deadline = time.monotonic() + within
        self.last: Any = None

    @contextmanager
    def attempt(self) -> Iterator[None]:
        try:
            yield
        except self.ignoring as exc:
            self.last = exc

    def late(self) -> bool:
        return time.monotonic() > self.deadline

    def failure(self, detail: Any = None) -> AssertionError:
        last = repr(self.last)
        message = f"{self.what}: not reached in {self.within} s (last: {last[:2000]})"
        return AssertionError(message if detail is None else f"{message}\n{detail}")


async def until(
    check: Callable[[], Any],
    within: float = WITHIN,
    what: str = "condition",
    every: float = EVERY,
    *,
    ignoring: Errors = (),
    detail: Callable[[], Any] | None = None,
) -> Any:
    """Poll ``check`` (sync or async) by the module's rule; ``detail`` may be async too."""
    poll = _Poll(within, what, ignoring)
    while True:
        with poll.attempt():
            if value := await holds(check):
                return value
            poll.last = value
        if poll.late():
            raise poll.failure(None if detail is None else await holds(detail))
        await asyncio.sleep(every)


def until_sync(
    check: Callable[[], Any],
    within: float = WITHIN,
    what: str = "condition",
    every: float = EVERY,
    *,
    ignoring: Errors = (),
    detail: Callable[[], Any] | None = None,
) -> Any:
    """:func:`until` for a sync ``check``, blocking the calling thread between checks."""
    poll = _Poll(within, what, ignoring)
    while True:
        with poll.attempt():
            if value := check():
                return value
            poll.last = value
        if poll.late():
            raise poll.failure(None if detail is None else detail())
        time.sleep(every)
