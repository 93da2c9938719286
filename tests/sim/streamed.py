"""``scanner`` with every range of one transfer or more planned a transfer at a time, each
step's events stored as the plan makes them: the path a range of thousands of transfers takes
(:func:`scanner.db.persist.plan_and_write`), walked by the simulation's small ranges under the
same faults. Run as a script, as the ``scanner`` command:
``python tests/sim/streamed.py run --config …``."""

from __future__ import annotations

import sys

from scanner.cli import main
from scanner.db import persist

if __name__ == "__main__":
    persist.STREAMED_TRANSFERS = 1
    sys.exit(main())
