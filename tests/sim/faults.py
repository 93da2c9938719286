"""The fault kinds a schedule draws from, and which of them the default run uses.

A kind stays out of :data:`DEFAULT_KINDS` while the scanner on ``main`` is known to fail it (it
is still run with ``SIM_FAULTS=all`` or by naming it: ``SIM_FAULTS=default,outage_long``).
"""

from __future__ import annotations

import os

# Every kind, with its weight in a schedule.
WEIGHTS: dict[str, int] = {
    # the chain and the customers
    "pay_partial": 10,
    "pay_exact": 10,
    "pay_over": 5,
    "pay_batch": 5,
    "pay_native": 6,
    "pay_failed": 4,
    "pay_late": 3,
    "pay_noise": 3,
    "mine": 12,
    "reorg_shallow": 6,  # shallower than the confirmations
    "reorg_deep": 3,  # up to max_reorg_depth; final blocks keep their content
    # the gateway
    "create": 12,
    "edit_amount": 3,
    "edit_expiry": 3,
    "cancel": 2,
    "reopen": 3,
    # the node and the proxy
    "outage": 3,  # the node unreachable for 0 to max_reorg_depth blocks, reorgs inside
    "outage_long": 2,  # up to LONG_OUTAGE_BLOCKS, reorgs inside
    "lag": 3,
    "stale_head": 2,
    "null_header": 3,
    "rate_limit": 3,
    "empty_logs": 2,
    "malformed_body": 2,
    "malformed_shape": 2,
    # the processes
    "kill9": 3,
    "scanner_down": 2,  # every `scanner run` gone for a few steps; backfills go on meanwhile
    "second_instance": 2,
    "backfill": 2,
    "backfill_window": 1,  # a backfill whose range reaches into the reorg window
    "dry_run": 2,
}

# Kinds whose failures the scanner on main still shows; see the module docstring.
KNOWN_FAILING: frozenset[str] = frozenset()

DEFAULT_KINDS: frozenset[str] = frozenset(WEIGHTS) - KNOWN_FAILING


def kinds_from(spec: str | None) -> frozenset[str]:
    """``SIM_FAULTS``: unset or ``default``; ``all``; or a comma list (``default`` expands,
    ``-kind`` removes)."""
    if not spec:
        return DEFAULT_KINDS
    chosen: set[str] = set()
    for part in (p.strip() for p in spec.split(",")):
        if part == "default":
            chosen |= DEFAULT_KINDS
        elif part == "all":
            chosen |= set(WEIGHTS)
        elif part.startswith("-"):
            chosen.discard(part[1:])
        elif part in WEIGHTS:
            chosen.add(part)
        elif part:
            raise ValueError(f"SIM_FAULTS: unknown kind {part!r}; kinds: {sorted(WEIGHTS)}")
    return frozenset(chosen)


def kinds_from_environment() -> frozenset[str]:
    return kinds_from(os.environ.get("SIM_FAULTS"))
