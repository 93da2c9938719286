"""A provider's request rate, budgeted per URL (``rpc_max_rps``): requests are paced before the
provider refuses them (TronGrid allows about 15 a second per API key).

Every client of one URL in the process shares its budget (the live scan, the sweep and a
verifier asking the same provider spend one key's allowance). The pacing is a schedule, not a
lock: each request takes the next free slot (``1 / rps`` seconds after the previous one) and
sleeps until it; between the read and the write of the schedule there is no ``await``, so no
two requests take one slot. A slow provider delays only the requests to its URL: each chain
asks its own, and waits in its own task.
"""

from __future__ import annotations

import asyncio
import time


class Budget:
    """At most ``rps`` requests a second, spaced evenly."""

    __slots__ = ("_gap", "_next", "rps")

    def __init__(self, rps: float) -> None:
        if rps <= 0:
            raise ValueError(f"rps must be positive, got {rps}")
        self.rps = rps
        self._gap = 1.0 / rps
        self._next = 0.0

    def reserve(self) -> float:
        """Take the next slot; the seconds to wait for it."""
        now = time.monotonic()
        at = max(now, self._next)
        self._next = at + self._gap
        return at - now

    async def take(self) -> None:
        """Wait for this request's slot."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


async def take(budget: Budget | None) -> None:
    """Wait for a slot of ``budget`` (None: no budget, go at once)."""
    if budget is not None:
        await budget.take()


_SHARED: dict[tuple[str, float], Budget] = {}


def shared(url: str, rps: float) -> Budget:
    """The one budget of ``url`` (at ``rps``) in this process."""
    key = (url, rps)
    budget = _SHARED.get(key)
    if budget is None:
        budget = _SHARED[key] = Budget(rps)
    return budget
