"""Run the start-up schema check in a process of its own (for the migration race test).

Reads the database from the environment exactly as ``scanner run`` would, prints ``checking``
before the check and ``status upgraded=<bool>`` after it; structlog prints ``schema_upgraded``.
"""

from __future__ import annotations

import asyncio

from scanner.config import load_settings
from scanner.db.migrate import ensure_schema


def main() -> None:
    settings = load_settings()
    print("checking", flush=True)
    status = asyncio.run(ensure_schema(settings))
    print(f"status upgraded={status.upgraded} head={status.head}", flush=True)


if __name__ == "__main__":
    main()
