"""Process-wide runtime settings for the long-running commands (``run`` and ``backfill``)."""

from __future__ import annotations

import gc
from typing import Final

#: CPython's default is (700, 10, 10).
GC_THRESHOLDS: Final = (50_000, 20, 10)


def tune_gc() -> None:
    """Fewer garbage collections, and none over the objects alive after start-up.

    A scan allocates many short-lived objects (about ten per decoded log: a dict, its strings),
    all freed by reference counting; the cyclic collector only has cycles to find. With the
    default thresholds it runs a young collection every 700 allocations, and the older
    generations, whose collections walk every log held in memory, often enough to take a fifth
    to a quarter of a backfill's time (measured with bench/backfill.py). ``gc.freeze()`` moves
    what start-up created (modules, settings) out of the collector's sight for good.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
