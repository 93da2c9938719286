"""The end of a simulation: the database against the oracle, and the event stream's invariants.

- Each payment's ``status`` and ``amount_received`` are what :func:`tests.sim.oracle.expect`
  says; no payment is ``confirmed`` with less than its amount on the final chain.
- Its live ``transactions`` rows are exactly the final chain's transfers to it (block, hash,
  ``late``), none counted twice; an orphaned row is a transfer the final chain does not hold
  there; no row belongs to an address no payment uses.
- Events, per payment in id order: a transfer's ``transfer_detected`` and ``transfer_orphaned``
  alternate, starting with the former and ending with it exactly when the transfer is on the
  final chain; every orphan is in blocks a reorg of the simulation replaced; every
  ``confirmed_reverted`` follows the orphan of the same transfer; ``paid_late`` follows its
  transfer's ``transfer_detected``; status changes chain (each starts where the last ended,
  gateway reopens aside), never leave ``confirmed`` and end at the payment's status.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.sim.chain import ChainTransfer, Reorg
from tests.sim.oracle import SCANNER_STATUSES, Expected, FinalChain, GatewayRow, expect

Key = tuple[str, int]


@dataclass
class Checked:
    payments: int = 0
    events: int = 0
    transactions: int = 0
    failures: list[str] = field(default_factory=list)


async def _rows(engine: AsyncEngine, sql: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(text(sql))).mappings()]


def _data(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value or {})


async def check_all(
    engine: AsyncEngine,
    rows: list[GatewayRow],
    chain: FinalChain,
    reorgs: list[Reorg],
    status_edits: dict[str, list[str]],
) -> Checked:
    out = Checked()
    payments = {
        str(r["id"]): r
        for r in await _rows(engine, "SELECT id, status, amount_received FROM payments")
    }
    txs = await _rows(
        engine,
        "SELECT payment_id, tx_hash, log_index, block_number, block_hash, status, late"
        " FROM transactions",
    )
    events = await _rows(
        engine,
        "SELECT id, payment_id, type, status_from, status_to, data FROM payment_events ORDER BY id",
    )
    out.transactions, out.events = len(txs), len(events)
    by_payment_txs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for tx in txs:
        by_payment_txs[str(tx["payment_id"])].append(tx)
    by_payment_events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_payment_events[str(event["payment_id"])].append(event)
    on_chain = {(t.tx_hash, t.log_index): t for t in chain.transfers}
    known = {r.id for r in rows}
    for pid in set(by_payment_txs) - known:
        out.failures.append(f"transactions rows of a payment nobody made: {pid}")
    for row in rows:
        out.payments += 1
        want = expect(row, chain)
        got = payments[row.id]
        where = f"payment {row.id} ({row.address}, {row.amount} of {row.token or 'native'})"
        out.failures += [
            f"{where}: {m}"
            for m in (
                _compare_payment(got, want, row)
                + _compare_transactions(by_payment_txs[row.id], want, on_chain)
                + _check_events(
                    by_payment_events[row.id], want, got, reorgs, status_edits.get(row.id, [])
                )
            )
        ]
    return out


def _compare_payment(got: dict[str, Any], want: Expected, row: GatewayRow) -> list[str]:
    out = []
    received = Decimal(str(got["amount_received"]))
    if got["status"] != want.status:
        out.append(f"status {got['status']}, the oracle says {want.status}")
    if received != want.amount_received:
        out.append(f"amount_received {received}, the oracle says {want.amount_received}")
    if got["status"] == "confirmed" and want.amount_received < row.amount:
        out.append(f"confirmed with {want.amount_received} of {row.amount} on the final chain")
    return out


def _compare_transactions(
    txs: list[dict[str, Any]], want: Expected, on_chain: dict[Key, ChainTransfer]
) -> list[str]:
    out = []
    live: dict[Key, dict[str, Any]] = {}
    for tx in txs:
        key = (str(tx["tx_hash"]), int(tx["log_index"]))
        if tx["status"] == "orphaned":
            if key in want.credits:
                out.append(f"transfer {key} orphaned though the final chain holds it")
            continue
        live[key] = tx
    for key in sorted(set(live) | want.credits):
        if key not in live:
            block = on_chain[key].block_number if key in on_chain else None
            out.append(f"transfer {key} of the final chain (block {block}) not credited")
            continue
        if key not in want.credits:
            out.append(f"transfer {key} credited, not on the final chain (to this payment)")
            continue
        tx, truth = live[key], on_chain[key]
        if int(tx["block_number"]) != truth.block_number or tx["block_hash"] != truth.block_hash:
            out.append(
                f"transfer {key} in block {tx['block_number']} {tx['block_hash'][:10]},"
                f" the chain has {truth.block_number} {truth.block_hash[:10]}"
            )
        if bool(tx["late"]) != (key in want.late):
            out.append(f"transfer {key} late={tx['late']}, the oracle says {key in want.late}")
    return out


def _check_events(
    events: list[dict[str, Any]],
    want: Expected,
    got: dict[str, Any],
    reorgs: list[Reorg],
    status_edits: list[str],
) -> list[str]:
    out: list[str] = []
    state: dict[Key, str] = {}
    status: str | None = "pending"
    for event in events:
        data = _data(event["data"])
        kind = event["type"]
        key = (str(data.get("tx_hash")), int(data.get("log_index", -2)))
        if kind == "transfer_detected":
            if state.get(key) == "detected":
                out.append(f"event {event['id']}: {key} detected twice without an orphan between")
            state[key] = "detected"
        elif kind == "transfer_orphaned":
            if state.get(key) != "detected":
                out.append(f"event {event['id']}: {key} orphaned, not detected before")
            state[key] = "orphaned"
            block = int(data.get("block_number", -1))
            if not any(r.first <= block <= r.last for r in reorgs):
                out.append(f"event {event['id']}: {key} orphaned in block {block}, no reorg there")
        elif kind == "confirmed_reverted":
            if state.get(key) != "orphaned":
                out.append(f"event {event['id']}: confirmed_reverted of {key} without its orphan")
        elif kind == "paid_late":
            if state.get(key) != "detected":
                out.append(f"event {event['id']}: paid_late of {key} not detected")
        elif kind == "status_changed":
            out += _status_step(event, status, status_edits)
            status = event["status_to"]
    for key, last in state.items():
        if (last == "detected") != (key in want.credits):
            out.append(f"events leave {key} {last}; on the final chain: {key in want.credits}")
    if got["status"] in SCANNER_STATUSES and not status_edits and status != got["status"]:
        out.append(f"status events end at {status}, the row says {got['status']}")
    return out


def _status_step(event: dict[str, Any], status: str | None, status_edits: list[str]) -> list[str]:
    old, new = event["status_from"], event["status_to"]
    if old == "confirmed":
        return [f"event {event['id']}: status left confirmed ({old} -> {new})"]
    if old == status or status_edits:
        return []
    return [f"event {event['id']}: status_changed {old} -> {new} after {status}"]
