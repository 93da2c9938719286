"""Where a run's CPU went: the scanner's event-loop thread, its other threads, the local
PostgreSQL server and the local node (anvil), read from ``/proc`` (Linux) before and after.

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
    node: float | None  # the local anvil's; None: unreadable
    readable: bool = True  # False: no /proc here (the threads' seconds are not known)

    def __sub__(self, before: Sample) -> Sample:
        return Sample(
            self.loop - before.loop,
            self.threads - before.threads,
            _less(self.postgres, before.postgres),
            _less(self.node, before.node),
            self.readable and before.readable,
        )

    def per(self, runs: int) -> Sample:
        """Each of ``runs`` runs' share."""
        n = max(1, runs)
        return Sample(
            self.loop / n,
            self.threads / n,
            None if self.postgres is None else self.postgres / n,
            None if self.node is None else self.node / n,
            self.readable,
        )


def _less(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def sample() -> Sample:
    """CPU seconds so far: every thread of this process, and PostgreSQL's server and the node
    where they run on this machine."""
    main = threading.main_thread().native_id
    loop = other = 0.0
    try:
        tasks = list((_PROC / "self" / "task").iterdir())
    except OSError:
        return Sample(0.0, 0.0, None, None, readable=False)
    for task in tasks:
        times = _times(task / "stat")
        if times is None:
            continue
        if int(task.name) == main:
            loop += times[0]
        else:
            other += times[0]
    found = _processes()
    return Sample(loop, other, _server(found.get("postgres", {})), _server(found.get("anvil", {})))


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


def _processes() -> dict[str, dict[int, tuple[float, float, int]]]:
    """The ``postgres`` and ``anvil`` processes by pid: (own CPU, reaped children's, parent)."""
    found: dict[str, dict[int, tuple[float, float, int]]] = {}
    try:
        entries = [p for p in _PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return found
    for entry in entries:
        times = _times(entry / "stat")
        if times is not None and times[3] in ("postgres", "anvil"):
            found.setdefault(times[3], {})[int(entry.name)] = times[:3]
    return found


def _server(found: dict[int, tuple[float, float, int]]) -> float | None:
    """A server's CPU: each of its processes', plus what its exited ones used (their parent,
    the first process, has reaped them: its children's seconds); None when none is readable
    (a server elsewhere, or no ``/proc``)."""
    if not found:
        return None
    total = sum(own for own, _, _ in found.values())
    # the first process: the one whose parent is none of them
    total += sum(children for _, children, parent in found.values() if parent not in found)
    return total


def describe(used: Sample, wall: float, *, postgres: bool) -> str:
    """One line: each part's CPU seconds (``postgres``: the server's too), their sum against
    the wall time."""
    if not used.readable:
        return "CPU by part: not known here (no /proc)"
    parts = [f"event loop {used.loop:.2f} s", f"other threads {used.threads:.2f} s"]
    total = used.loop + used.threads
    if postgres and used.postgres is not None:
        parts.append(f"PostgreSQL server {used.postgres:.2f} s")
        total += used.postgres
    if used.node is not None:
        parts.append(f"node {used.node:.2f} s")
        total += used.node
    side = total / wall if wall > 0 else 0.0
    return (
        f"CPU: {', '.join(parts)}; together {total:.2f} s in {wall:.2f} s of wall time"
        f" ({side:.2f} cores busy on average)"
    )
