"""Telling operators what a batch did: one structured log event per fact, and the metrics."""

from __future__ import annotations

import logging
from typing import Any

from scanner.core.kinds import ChainKind
from scanner.observe.metrics import Metrics
from scanner.scan.batch import BatchReport

PER_EVENT_LOG_LIMIT = 200


def report_batch(
    log: Any, metrics: Metrics, chain: str, result: BatchReport, seconds: float, kind: ChainKind
) -> None:
    """Addresses are shown as the chain's users write them (``kind``: base58 on TRON)."""
    if result.end >= result.start:
        log.info(
            "range_scanned",
            from_block=result.start,
            to_block=result.end,
            logs=result.logs,
            matched=result.matched,
            events=len(result.events),
            seconds=round(seconds, 4),
        )
    for reason, count in result.skipped.items():
        log.warning("logs_skipped", reason=reason, count=count, from_block=result.start)
    for transfer in result.unmatched:
        log.warning(
            "transfer_unmatched",
            tx_hash=transfer.tx_hash,
            log_index=transfer.log_index,
            block_number=transfer.block_number,
            address=kind.show(transfer.to_address),
            token=None if transfer.token is None else kind.show(transfer.token),
            value=str(transfer.value),
        )
    _log_events(log, result)
    _count(metrics, chain, result, seconds)


def _count(metrics: Metrics, chain: str, result: BatchReport, seconds: float) -> None:
    if result.end >= result.start:
        metrics.batch_scanned(chain, seconds=seconds, logs=result.logs, matched=result.matched)
    for reason, count in result.skipped.items():
        metrics.skipped_logs.labels(chain, reason).inc(count)
    if result.unmatched:
        metrics.transfers_unmatched.labels(chain).inc(len(result.unmatched))
    changed: dict[str, int] = {}  # counted first: a backfill changes thousands at once
    for event in result.events:
        if event.type == "status_changed" and event.status_to is not None:
            changed[event.status_to] = changed.get(event.status_to, 0) + 1
        elif event.type == "confirmed_reverted":
            metrics.finality_violated(chain)
        elif event.type == "invalid_payment":
            metrics.invalid_rows.labels(chain, "payments").inc()
    for status, count in changed.items():
        metrics.payment_status_changed(chain, status, count)


def _log_events(log: Any, result: BatchReport) -> None:
    """One line per event for an ordinary batch. A bulk batch (a backfill paying thousands)
    gets one ``payments_changed`` summary at info and its per-event lines at debug: at tens of
    thousands of events a second, a line each would cost more than the scan itself, and nobody
    reads them. Finality violations are always logged one by one, as errors."""
    bulk = len(result.events) > PER_EVENT_LOG_LIMIT
    if bulk:
        counts: dict[str, int] = {}
        for event in result.events:
            name = _name(event)
            counts[name] = counts.get(name, 0) + 1
        log.info("payments_changed", from_block=result.start, to_block=result.end, **counts)
    for event in result.events:
        if not bulk or event.type == "confirmed_reverted":
            _log_event(log, event, log.info)
        elif _debug_enabled(log):
            _log_event(log, event, log.debug)


def _debug_enabled(log: Any) -> bool:
    check = getattr(log, "is_enabled_for", None)
    return bool(check(logging.DEBUG)) if check is not None else True


def _name(event: Any) -> str:
    return f"payment_{event.status_to}" if event.type == "status_changed" else str(event.type)


def _log_event(log: Any, event: Any, emit: Any) -> None:
    fields = {"payment_id": str(event.payment_id), **{k: v for k, v in event.data.items()}}
    if event.type == "status_changed":
        emit(_name(event), status_from=event.status_from, **fields)
    elif event.type == "confirmed_reverted":
        log.error("finality_violation", **fields)
    elif event.type == "invalid_payment":
        log.warning("payment_invalid", **fields)
    else:
        emit(event.type, **fields)
