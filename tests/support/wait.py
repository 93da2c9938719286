"""The one way a test waits for what has no event to wait on: poll, never a fixed sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def holds(check: Callable[[], Any]) -> Any:
    """``check()``, awaited when it is a coroutine function's."""
    value = check()
    if inspect.isawaitable(value):
        value = await value
    return value


async def until(
    check: Callable[[], Any], within: float = 15.0, what: str = "condition", every: float = 0.02
) -> Any:
    """Poll ``check`` (sync or async) every ``every`` s until it returns something truthy, and
    return that; fail after ``within`` s, naming ``what``."""
    deadline = time.monotonic() + within
    while not (value := await holds(check)):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {within} s")
        await asyncio.sleep(every)
    return value
