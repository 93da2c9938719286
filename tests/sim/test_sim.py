"""The fault simulation's entry point: ``SIM_SECONDS`` of seeded schedules per database, each
judged by the oracle; a failure names its seed (see ``tests/sim/__init__.py``)."""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import migrated_database
from tests.sim.faults import WEIGHTS, kinds_from_environment
from tests.sim.run import Result, run_schedule

pytestmark = pytest.mark.long(150)  # seconds, about: the workers take it early

SECONDS = float(os.environ.get("SIM_SECONDS", "40"))
SCHEDULE_SECONDS = 60.0  # a long run is a sequence of schedules of about this length
SEED = os.environ.get("SIM_SEED")
STEPS = os.environ.get("SIM_STEPS")
SETUP_AND_SETTLE = 150  # seconds a schedule may take beyond its steps

fresh_database = contextmanager(migrated_database)


def summary(backend: str, results: list[Result], kinds: frozenset[str], *, failed: int) -> str:
    injected: Counter[str] = Counter()
    for result in results:
        injected.update(result.injected)
    lines = [
        f"fault simulation on {backend}: {len(results)} schedule(s) ({failed} failed), seeds"
        f" {[r.seed for r in results]}, {sum(r.steps for r in results)} steps,"
        f" {sum(r.streamed for r in results)} with each range's events stored as planned,"
        f" {sum(r.unscanned for r in results)} backfilled before the first live scan",
        f"  payments checked {sum(r.payments for r in results)}, transactions"
        f" {sum(r.transactions for r in results)}, events {sum(r.events for r in results)},"
        f" reorgs {sum(r.reorgs for r in results)}",
        "  cursor back at the head after the faults in at most"
        f" {max((r.catch_up_seconds for r in results), default=0):.1f} s (at most"
        f" {max((r.behind for r in results), default=0)} blocks behind when they stopped)",
        "  faults injected: " + ", ".join(f"{k} {n}" for k, n in sorted(injected.items())),
        "  kinds off: " + (", ".join(sorted(set(WEIGHTS) - kinds)) or "-"),
    ]
    return "\n".join(lines)


def failure(result: Result, backend: str, workdir: Path) -> str:
    shown = "\n".join(result.failures[:40])
    more = len(result.failures) - 40
    (workdir / "schedule.log").write_text("\n".join(result.log) + "\n", encoding="utf-8")
    kept = Path(tempfile.gettempdir()) / "scanner-sim" / f"{backend}-{result.seed}"
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(workdir, kept, ignore=shutil.ignore_patterns("*.db*"))
    named = {m[:8] for m in re.findall(r"payment ([0-9a-f-]{36})", shown)}
    story = [line for line in result.log if any(n in line for n in named)]
    return (
        f"the fault simulation failed on {backend}; replay with SIM_SEED={result.seed}"
        f" SIM_STEPS={result.steps} SCANNER_TEST_BACKENDS={backend}"
        + (" (each range's events stored as planned)" if result.streamed else "")
        + (" (backfilled before the first live scan)" if result.unscanned else "")
        + f"\n{shown}"
        + (f"\n... and {more} more" if more > 0 else "")
        + "\nthe steps that name those payments:\n"
        + "\n".join(story[-60:])
        + "\nthe schedule's last steps:\n"
        + "\n".join(result.log[-30:])
        + f"\nthe whole schedule and every process's log: {kept}"
    )


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + SETUP_AND_SETTLE + 60)
async def test_every_schedule_ends_as_the_oracle_says(
    db_backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kinds = kinds_from_environment()
    seeds = random.Random(int(SEED) if SEED else time.time_ns())
    results: list[Result] = []
    failed: list[str] = []
    deadline = time.monotonic() + SECONDS
    while not results or (SEED is None and time.monotonic() + SCHEDULE_SECONDS / 2 < deadline):
        seed = int(SEED) if SEED else seeds.randrange(2**32)
        workdir = tmp_path / f"schedule-{len(results)}"
        workdir.mkdir()
        length = min(SCHEDULE_SECONDS, max(5.0, deadline - time.monotonic()))
        with fresh_database(db_backend, request, workdir / "scanner.db") as url:
            result = await run_schedule(
                seed, url, workdir, kinds, seconds=length, steps=int(STEPS) if STEPS else None
            )
        results.append(result)
        if result.failures:
            failed.append(failure(result, db_backend, workdir))
            with capsys.disabled():
                print(f"\n{failed[-1]}\n")
        shutil.rmtree(workdir, ignore_errors=True)  # a long run makes many
    with capsys.disabled():
        print("\n" + summary(db_backend, results, kinds, failed=len(failed)))
    if failed:
        pytest.fail("\n\n".join(failed[:3]), pytrace=False)
