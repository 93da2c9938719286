"""One seeded schedule: steps drawn from the fault kinds by weight, run against a :class:`World`.

The schedule's draws all come from ``random.Random(seed)``, so a seed gives the same steps again
(``SIM_SEED``, ``SIM_STEPS``); how far the scanner has got when a step lands is the machine's,
so a replay retries the same schedule under other timings. Faults that last (lag, a frozen head,
an outage) are undone a few steps later, and all of them before the end.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests.sim.faults import WEIGHTS
from tests.sim.gateway import Known
from tests.sim.world import World

Undo = Callable[[], None]
Step = Callable[["Schedule"], Awaitable[bool]]
STEPS: dict[str, Step] = {}


def step(kind: str) -> Callable[[Step], Step]:
    """Register the step that injects ``kind``; it returns False when it had nothing to do."""

    def register(fn: Step) -> Step:
        assert kind in WEIGHTS, kind
        STEPS[kind] = fn
        return fn

    return register


@dataclass
class Schedule:
    world: World
    rng: random.Random
    kinds: frozenset[str]
    injected: Counter[str] = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)
    undo: list[tuple[int, Undo]] = field(default_factory=list)  # (step to undo at, how)
    step_no: int = 0

    def note(self, what: str) -> None:
        self.log.append(f"{self.step_no:4d} h={self.world.chain.head()} {what}")

    async def step(self) -> None:
        self.step_no += 1
        for due, undo in [u for u in self.undo if u[0] <= self.step_no]:
            undo()
            self.undo.remove((due, undo))
        kinds = sorted(self.kinds)
        kind = self.rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
        if await STEPS[kind](self):
            self.injected[kind] += 1
        await asyncio.sleep(self.rng.choice((0.0, 0.05, 0.1, 0.3)))

    def later(self, steps: int, undo: Undo) -> None:
        self.undo.append((self.step_no + steps, undo))

    def end_faults(self) -> None:
        for _, undo in self.undo:
            undo()
        self.undo.clear()
        self.world.proxy.proxy.reset()

    # -- helpers of the steps ----------------------------------------------------------------

    def pick(self, token: bool | None = None) -> Known | None:
        known = list(self.world.gateway.known.values())
        if token is not None:
            known = [k for k in known if (k.asset.address is not None) == token]
        return self.rng.choice(known) if known else None

    def mine(self, blocks: int = 1) -> None:
        self.world.chain.mine(blocks)

    def customer(self) -> str:
        return self.rng.choice(self.world.customers)
