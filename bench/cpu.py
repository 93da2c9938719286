"""Where a run's CPU went: the scanner's event-loop thread, its other threads, and the local
PostgreSQL server, read from ``/proc`` (Linux) before and after.

The event loop runs the scanner's Python (parsing, matching, the ledger, building rows, the
drivers' encoding); SQLite runs in the driver's worker threads; PostgreSQL in its server
processes. Their CPU seconds beside the run's wall time tell whether the parts ran side by side
(their sum well above the wall time) or one after the other (about equal).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Sample:
    loop: float  # the main thread's (the event loop's) CPU seconds
    threads: float  # every other thread of this process
    postgres: float | None  # the local PostgreSQL server's, every process; None: unreadable

    def __sub__(self, before: Sample) -> Sample:
        pg = None
        if self.postgres is not None and before.postgres is not None:
            pg = self.postgres - before.postgres
        return Sample(self.loop - before.loop, self.threads - before.threads, pg)


def sample() -> Sample:
    """CPU seconds so far (every thread of this process; PostgreSQL's server, if local)."""
    main = threading.main_thread().native_id
    loop = other = 0.0
    try:
        tasks = list((_PROC / "self" / "task").iterdir())
    except OSError:
        return Sample(0.0, 0.0, None)
    for task in tasks:
        times = _times(task / "stat")
        if times is None:
            continue
        if int(task.name) == main:
            loop += times[0]
        else:
            other += times[0]
    return Sample(loop, other, _postgres())


def _times(stat: Path) -> tuple[float, float, int, str] | None:
    """(own CPU seconds, reaped children's CPU seconds, parent pid, command) of one stat file."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    command = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # after the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15)
    own = (int(fields[11]) + int(fields[12])) / _TICK
    children = (int(fields[13]) + int(fields[14])) / _TICK
    return own, children, int(fields[1]), command


def _postgres() -> float | None:
    """Every ``postgres`` process's CPU, plus what the server's exited backends used (their
    parent, the postmaster, has reaped them: its children's seconds); None when no such
    process is readable (a server elsewhere, or no ``/proc``)."""
    found: dict[int, tuple[float, float, int]] = {}
    try:
        entries = [p for p in _PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return None
    for entry in entries:
        times = _times(entry / "stat")
        if times is not None and times[3] == "postgres":
            found[int(entry.name)] = times[:3]
    if not found:
        return None
    total = sum(own for own, _, _ in found.values())
    # the postmaster: the one whose parent is no postgres process
    total += sum(children for _, children, parent in found.values() if parent not in found)
    return total


def describe(used: Sample, wall: float, *, postgres: bool) -> str:
    """One line: each part's CPU seconds (``postgres``: the server's too), their sum against
    the wall time."""
    parts = [f"event loop {used.loop:.2f} s", f"other threads {used.threads:.2f} s"]
    total = used.loop + used.threads
    if postgres and used.postgres is not None:
        parts.append(f"PostgreSQL server {used.postgres:.2f} s")
        total += used.postgres
    side = total / wall if wall > 0 else 0.0
    return (
        f"CPU: {', '.join(parts)}; together {total:.2f} s in {wall:.2f} s of wall time"
        f" ({side:.2f} cores busy on average)"
    )
