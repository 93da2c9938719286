"""Telling operators what a batch did: one structured log event per fact, and the metrics."""

from __future__ import annotations

from typing import Any

from scanner.observe.metrics import Metrics
from scanner.scan.batch import BatchResult


def report_batch(
    log: Any, metrics: Metrics | None, chain: str, result: BatchResult, seconds: float
) -> None:
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
    for event in result.events:
        _log_event(log, event)
    if metrics is None:
        return
    if result.end >= result.start:
        metrics.batch_scanned(chain, seconds=seconds, logs=result.logs, matched=result.matched)
    for reason, count in result.skipped.items():
        metrics.skipped_logs.labels(chain, reason).inc(count)
    for event in result.events:
        if event.type == "status_changed" and event.status_to is not None:
            metrics.payment_status_changed(chain, event.status_to)
        elif event.type == "confirmed_reverted":
            metrics.finality_violated(chain)


def _log_event(log: Any, event: Any) -> None:
    fields = {"payment_id": str(event.payment_id), **{k: v for k, v in event.data.items()}}
    if event.type == "status_changed":
        log.info(f"payment_{event.status_to}", status_from=event.status_from, **fields)
    elif event.type == "confirmed_reverted":
        log.error("finality_violation", **fields)
    elif event.type == "invalid_payment":
        log.warning("payment_invalid", **fields)
    else:
        log.info(event.type, **fields)
