"""Two ``scanner run`` processes on one database: one scans each chain, the other waits, and
takes over when the first stops. SQLite: a file lock, and the second says loudly that SQLite runs
one scanning process; PostgreSQL: chain leases (one chain, two instances: one holds it)."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.e2e.harness import Harness
from tests.ops.support import (
    json_lines,
    scanner_env,
    scanner_process,
    write_config,
)
from tests.support.wait import until_sync


def _events(text: str) -> list[str]:
    return [str(e.get("event")) for e in json_lines(text)]


async def test_a_second_process_waits_for_the_chain_and_takes_over(
    h: Harness, db_url: str, db_backend: str, tmp_path: Path
) -> None:
    sqlite = db_backend == "sqlite"
    acquired = "chain_lock_acquired" if sqlite else "chain_lease_acquired"
    waiting = "chain_locked_elsewhere" if sqlite else "chain_held_elsewhere"
    await h.scan()  # migrates nothing; inserts the tokens as any first run would
    config = write_config(
        tmp_path / "scanner.toml",
        h.chain.url,
        [("USDT", h.token, 6), ("DAI", h.token18, 18)],
        poll_interval=0.1,
    )
    env = scanner_env(db_url)
    with scanner_process(["run", "--config", str(config)], env) as first:
        until_sync(lambda: acquired in _events(first.err()), 20, what="first lock")
        until_sync(lambda: "scanner_ready" in _events(first.err()), 20, what="first ready")
        assert waiting not in _events(first.err())  # alone: it takes the chain, never waits
        (ready,) = [e for e in json_lines(first.err()) if e.get("event") == "scanner_ready"]
        assert (ready["scanning"], ready["standing_by"]) == (["anvil"], [])
        started = next(e for e in json_lines(first.err()) if e.get("event") == "scanner_started")
        assert started["database"] and "secret" not in started["database"]
        with scanner_process(["run", "--config", str(config)], env) as second:
            until_sync(lambda: waiting in _events(second.err()), 20, what="waiting")
            assert ("sqlite_single_process" in _events(second.err())) is sqlite
            until_sync(lambda: "scanner_ready" in _events(second.err()), 20, what="standby")
            levels = {e.get("event"): e.get("level") for e in json_lines(second.err())}
            assert not [name for name, level in levels.items() if level == "error"], levels
            ready = next(e for e in json_lines(second.err()) if e.get("event") == "scanner_ready")
            assert (ready["scanning"], ready["standing_by"]) == ([], ["anvil"])
            h.mine(3)  # the first keeps scanning; the second must not touch the chain
            until_sync(lambda: "range_scanned" in _events(first.err()), 20, what="first scans")
            assert acquired not in _events(second.err())
            assert "range_scanned" not in _events(second.err())

            first.send_signal(signal.SIGTERM)
            assert first.exit_within(15)[0] == 0
            until_sync(lambda: acquired in _events(second.err()), 20, what="take-over")
            h.mine(2)
            until_sync(lambda: "range_scanned" in _events(second.err()), 20, what="second scans")
            second.send_signal(signal.SIGTERM)
            assert second.exit_within(15)[0] == 0
