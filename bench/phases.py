"""Wall-clock time per phase of the scan, by wrapping the scanner's functions (``--phases``).

A measuring aid, not part of the product: :func:`install` replaces module attributes with timing
wrappers (so it must run before the scan starts), :func:`report` prints inclusive wall time,
main-thread CPU time and call counts. Async phases are inclusive of whatever else ran while they
awaited: the reads running ahead use the same thread (their JSON parsing lands in the awaiting
phase's CPU too), and SQLite work runs in aiosqlite's thread (wall, not CPU, of the awaiting
phase). On a loaded machine, trust CPU over wall for sync phases (decode, ledger, rows to core).
The commit path (everything under ``commit range``) runs strictly in order, one range at a time;
the reads run ahead of it concurrently, so ``wall - commit range`` is roughly the time the commit
path waited for reads.

Names that no longer exist (the scanner changed) are skipped with a note, never an error.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import time
from collections.abc import Callable
from typing import Any

_TIMES: dict[str, list[float]] = {}  # label: [wall seconds, main-thread CPU seconds, calls]
_ORDER: list[tuple[str, int]] = []  # (label, depth) in report order
_MISSING: list[str] = []

# (module, attribute path, label, depth): depth only indents the report
PHASES: tuple[tuple[str, str, str, int], ...] = (
    ("scanner.scan.live", "ChainScanner._commit", "commit range (live, in order)", 0),
    ("scanner.scan.backfill", "Backfill._commit", "commit range (backfill, in order)", 0),
    ("scanner.scan.live", "q.get_cursor", "cursor read", 1),
    ("scanner.scan.live", "q.stored_headers", "stored headers read", 1),
    ("scanner.scan.batch", "verify_links", "verify links", 1),
    ("scanner.scan.batch", "decode_transfer_logs", "decode logs", 1),
    ("scanner.scan.batch", "q.live_txs_in_range", "stale tx check query", 1),
    ("scanner.scan.batch", "load_into_ledger", "load payments (all)", 1),
    ("scanner.scan.payments", "q.payments_by_address", "payments by address query", 2),
    ("scanner.scan.payments", "q.payments_by_id", "payments by id query", 2),
    ("scanner.scan.payments", "q.payments_to_advance", "payments to advance query", 2),
    ("scanner.scan.payments", "_core_payments", "rows to core payments", 2),
    ("scanner.scan.payments", "q.credits_of", "credits of payments query", 2),
    ("scanner.scan.payments", "Ledger", "ledger construction", 2),
    ("scanner.core.ledger", "Ledger.apply", "ledger apply (matching)", 1),
    ("scanner.core.ledger", "Ledger.advance", "ledger advance (finality)", 1),
    ("scanner.core.ledger", "Ledger.events", "ledger events()", 1),
    ("scanner.core.ledger", "Ledger.changed", "ledger changed()", 1),
    ("scanner.core.ledger", "Ledger.credits", "ledger credits()", 1),
    ("scanner.scan.batch", "_persist", "persist (all writes)", 1),
    ("scanner.db.queries", "_existing_keys", "existing tx keys query", 2),
    ("scanner.db.queries", "save_credits", "insert/update transactions", 2),
    ("scanner.db.queries", "update_payments", "update payments", 2),
    ("scanner.db.queries", "insert_events", "insert events", 2),
    ("scanner.db.queries", "update_tx_confirmations", "update tx confirmations", 2),
    ("scanner.db.queries", "store_blocks", "store block hashes", 2),
    ("scanner.db.queries", "prune_blocks", "prune block hashes", 2),
    ("scanner.db.queries", "set_cursor", "set cursor", 2),
    ("scanner.scan.backfill", "jobs.advance", "backfill job progress", 1),
    ("sqlalchemy.ext.asyncio.session", "AsyncSession.commit", "COMMIT (session.commit)", 1),
    (
        "sqlalchemy.ext.asyncio.session",
        "AsyncSessionTransaction.__aexit__",
        "COMMIT (session.begin() exit)",
        1,
    ),
    ("scanner.scan.live", "report_batch", "report batch (logs, metrics; live)", 1),
    ("scanner.scan.backfill", "report_batch", "report batch (logs, metrics; backfill)", 1),
    ("scanner.scan.live", "catch_up", "catch-up of unseen payments (per tick)", 0),
    ("scanner.scan.live", "ChainScanner._native_watched", "native watch query (per tick)", 0),
    ("scanner.scan.live", "fetch_range", "fetch range (concurrent, ahead)", 0),
    ("scanner.scan.backfill", "fetch_range", "fetch range (concurrent, ahead)", 0),
    ("scanner.chain.rpc", "RpcClient._post", "HTTP round trip", 1),
    ("scanner.chain.rpc", "jsonrpc.decode", "JSON parse (orjson)", 1),
)


def _wrap(label: str, target: Callable[..., Any]) -> Callable[..., Any]:
    slot = _TIMES.setdefault(label, [0.0, 0.0, 0])
    if inspect.iscoroutinefunction(target):

        @functools.wraps(target)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return await target(*args, **kwargs)
            finally:
                slot[0] += time.perf_counter() - started
                slot[1] += time.thread_time() - cpu
                slot[2] += 1

        return timed_async

    @functools.wraps(target)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return target(*args, **kwargs)
        finally:
            slot[0] += time.perf_counter() - started
            slot[1] += time.thread_time() - cpu
            slot[2] += 1

    return timed


def install() -> None:
    """Wrap every phase that exists; call once, before the scan."""
    for module_name, path, label, depth in PHASES:
        try:
            owner: Any = importlib.import_module(module_name)
            *parents, attr = path.split(".")
            for part in parents:
                owner = getattr(owner, part)
            target = getattr(owner, attr)
        except (ImportError, AttributeError):
            _MISSING.append(f"{module_name}:{path}")
            continue
        if getattr(target, "__bench_timed__", False):
            continue
        wrapped = _wrap(label, target)
        wrapped.__bench_timed__ = True  # type: ignore[attr-defined]
        setattr(owner, attr, wrapped)
        if (label, depth) not in _ORDER:
            _ORDER.append((label, depth))


def reset() -> None:
    for slot in _TIMES.values():
        slot[0], slot[1], slot[2] = 0.0, 0.0, 0


def report(wall: float, cpu: float, title: str) -> None:
    print(f"\n{title}: wall {wall:.3f} s, process CPU {cpu:.3f} s")
    print(f"  {'phase':<52} {'wall s':>8} {'wall %':>6} {'CPU s':>8} {'calls':>8}")
    for label, depth in _ORDER:
        seconds, thread_cpu, calls = _TIMES[label]
        if calls == 0:
            continue
        share = 100 * seconds / wall if wall > 0 else 0.0
        name = "  " * depth + label
        print(f"  {name:<52} {seconds:8.3f} {share:5.1f}% {thread_cpu:8.3f} {int(calls):>8,}")
    if _MISSING:
        print(f"  (not found, skipped: {', '.join(_MISSING)})")
    print(flush=True)
