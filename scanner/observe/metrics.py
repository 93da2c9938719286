"""Prometheus metrics, held by one :class:`Metrics` instance with its own registry.

Nothing is registered at import time: each instance builds a fresh ``CollectorRegistry`` (with
the process, platform and GC collectors), so tests and several instances never collide.

Reorg depth is a histogram only (``scanner_reorg_depth``): its ``_count`` equals the number of
reorgs, its buckets answer "how many reorgs deeper than N", and the depth of the latest reorg is
in the ``reorg_detected`` log event.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from scanner.observe.webhook_metrics import WebhookMetrics
from scanner.secrets import Scrubber

RPC_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)
BATCH_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
REORG_DEPTH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
CHAIN = ("chain",)


class Metrics:
    """Every scanner metric; the RPC client's observer
    (:class:`scanner.chain.retrying.RpcObserver`: ``method`` is the JSON-RPC method, or
    ``batch:<method>`` / ``batch:mixed`` for a batch; ``outcome`` is ``ok`` or a bounded error
    label such as ``transport_error`` or ``rate_limited``)."""

    def __init__(self, *, secrets: Sequence[str] = ()) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._scrubber = Scrubber(secrets)
        self._log = structlog.get_logger(__name__)
        self._progress_metrics()
        self._rpc_metrics()
        self._scan_metrics()
        self._batch_metrics()
        self._verify_metrics()
        self._state_metrics()
        self._ws_metrics()
        self.webhooks = WebhookMetrics(self.registry)

    def _counter(self, name: str, doc: str, labels: Sequence[str]) -> Counter:
        return Counter(name, doc, labels, registry=self.registry)

    def _gauge(self, name: str, doc: str, labels: Sequence[str]) -> Gauge:
        return Gauge(name, doc, labels, registry=self.registry)

    def _histogram(
        self, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> Histogram:
        return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)

    def _progress_metrics(self) -> None:
        self.chain_head_block = self._gauge(
            "scanner_chain_head_block", "Latest block number the node reported.", CHAIN
        )
        self.last_scanned_block = self._gauge(
            "scanner_last_scanned_block", "Last block the scanner has fully processed.", CHAIN
        )
        self.lag_blocks = self._gauge(
            "scanner_lag_blocks", "Head minus last scanned block (never negative).", CHAIN
        )
        self.backfill_blocks = self._counter(
            "scanner_backfill_blocks", "Blocks scanned by backfills.", CHAIN
        )

    def _rpc_metrics(self) -> None:
        self.rpc_requests = self._counter(
            "scanner_rpc_requests",
            "JSON-RPC round trips (each attempt), by outcome: ok or an error label.",
            ("chain", "method", "outcome"),
        )
        self.rpc_request_duration = self._histogram(
            "scanner_rpc_request_duration_seconds",
            "Time of one JSON-RPC round trip (one attempt).",
            ("chain", "method"),
            RPC_SECONDS_BUCKETS,
        )
        self.rpc_retries = self._counter(
            "scanner_rpc_retries",
            "JSON-RPC attempts that failed transiently and were retried.",
            ("chain", "method"),
        )

    def _scan_metrics(self) -> None:
        self.logs_processed = self._counter(
            "scanner_logs_processed",
            "Logs read (decoded, or passed over: paying nobody watched).",
            CHAIN,
        )
        self.transfers_matched = self._counter(
            "scanner_transfers_matched", "Transfers matched to a payment.", CHAIN
        )
        self.skipped_logs = self._counter(
            "scanner_skipped_logs",
            "Logs skipped, by reason (malformed, zero value, ...).",
            ("chain", "reason"),
        )
        self.transfers_unmatched = self._counter(
            "scanner_transfers_unmatched",
            "Transfers to an address some payment uses that no payment could take.",
            CHAIN,
        )
        self._row_metrics()

    def _row_metrics(self) -> None:
        """What the gateway's rows and tokens cost a scan."""
        self.token_halted = self._gauge(
            "scanner_token_halted",
            "1 while a token is halted (its row's decimals are not its contract's), else 0.",
            ("chain", "token"),
        )
        self.payment_locked = self._counter(
            "scanner_payment_locked",
            "Ranges retried because a payment row was locked by another transaction.",
            CHAIN,
        )
        self.catch_up_truncated = self._counter(
            "scanner_catch_up_truncated",
            "Look-backs for late payments that stopped short, by reason: older than"
            " catch_up_max_blocks (bound) or a block the node cannot show (not_available).",
            ("chain", "reason"),
        )
        self.invalid_rows = self._counter(
            "scanner_invalid_rows",
            "Gateway rows the scanner cannot use (reported and left alone), by table.",
            ("chain", "table"),
        )

    def _batch_metrics(self) -> None:
        self.batch_duration = self._histogram(
            "scanner_batch_duration_seconds",
            "Time to scan one block range end to end.",
            CHAIN,
            BATCH_SECONDS_BUCKETS,
        )
        self.reorgs = self._counter("scanner_reorgs", "Reorgs detected.", CHAIN)
        self.reorg_depth = self._histogram(
            "scanner_reorg_depth", "Depth of each reorg, in blocks.", CHAIN, REORG_DEPTH_BUCKETS
        )

    def _verify_metrics(self) -> None:
        self.verification_failed = self._counter(
            "scanner_verification_failed",
            "Credits a verify_urls provider disagreed with (their payments stay confirming).",
            CHAIN,
        )
        self.verification_delayed = self._counter(
            "scanner_verification_delayed",
            "Verification rounds put off: no verify_urls provider answered.",
            CHAIN,
        )
        self.logs_missed = self._counter(
            "scanner_logs_missed",
            "Transfers the sweep of final ranges found that the first read had left out.",
            CHAIN,
        )

    def _state_metrics(self) -> None:
        self.payment_status_changes = self._counter(
            "scanner_payment_status_changes",
            "Payment status transitions, by new status.",
            ("chain", "status"),
        )
        self.open_payments = self._gauge(
            "scanner_open_payments", "Payments still waiting for funds or confirmations.", CHAIN
        )
        self.chain_halted = self._gauge(
            "scanner_chain_halted", "1 while the chain is halted for an operator, else 0.", CHAIN
        )
        self.finality_violations = self._counter(
            "scanner_finality_violations", "Confirmed transfers later orphaned by a reorg.", CHAIN
        )
        self.node_stalls = self._counter(
            "scanner_node_stalls",
            "RPC URLs found stalled (head older than stall_after): each one failed over.",
            CHAIN,
        )
        self.chain_stalled = self._gauge(
            "scanner_chain_stalled", "1 while every RPC URL of the chain is stalled, else 0.", CHAIN
        )
        self.chain_locks_lost = self._counter(
            "scanner_chain_locks_lost",
            "Times the connection holding the chain's writer lock was lost.",
            CHAIN,
        )

    def _ws_metrics(self) -> None:
        self.ws_connected_gauge = self._gauge(
            "scanner_ws_connected",
            "1 while the chain's newHeads subscription (ws_url) is open, else 0.",
            CHAIN,
        )
        self.ws_heads = self._counter(
            "scanner_ws_heads", "Heads received over the newHeads subscription.", CHAIN
        )
        self.ws_disconnects = self._counter(
            "scanner_ws_disconnects",
            "newHeads subscriptions ended and reconnected, by reason (closed, quiet, error, "
            "refused).",
            ("chain", "reason"),
        )

    # -- per-chain facts -------------------------------------------------------------------

    def add_chain(self, chain: str) -> None:
        """Create the chain's series at zero, so rates and alerts work before the first event."""
        for counter in (
            self.logs_processed,
            self.transfers_matched,
            self.reorgs,
            self.finality_violations,
            self.backfill_blocks,
            self.node_stalls,
            self.chain_locks_lost,
            self.verification_failed,
            self.verification_delayed,
            self.logs_missed,
        ):
            counter.labels(chain)
        self.reorg_depth.labels(chain)  # _count 0: "no reorg yet", not "no data"
        self.batch_duration.labels(chain)
        self.chain_halted.labels(chain).set(0)
        self.chain_stalled.labels(chain).set(0)

    def progressed(self, chain: str, *, head: int, cursor: int) -> None:
        """The node's head and the scanner's cursor, as of now."""
        self.chain_head_block.labels(chain).set(head)
        self.last_scanned_block.labels(chain).set(cursor)
        self.lag_blocks.labels(chain).set(max(0, head - cursor))

    def batch_scanned(self, chain: str, *, seconds: float, logs: int, matched: int) -> None:
        self.batch_duration.labels(chain).observe(seconds)
        self.logs_processed.labels(chain).inc(logs)
        self.transfers_matched.labels(chain).inc(matched)

    def logs_skipped(self, chain: str, reason: str, count: int = 1) -> None:
        self.skipped_logs.labels(chain, reason).inc(count)

    def payment_status_changed(self, chain: str, status: str, count: int = 1) -> None:
        self.payment_status_changes.labels(chain, status).inc(count)

    def reorg_detected(self, chain: str, depth: int) -> None:
        self.reorgs.labels(chain).inc()
        self.reorg_depth.labels(chain).observe(depth)

    def finality_violated(self, chain: str) -> None:
        self.finality_violations.labels(chain).inc()

    def backfilled(self, chain: str, blocks: int) -> None:
        self.backfill_blocks.labels(chain).inc(blocks)

    def set_open_payments(self, chain: str, count: int) -> None:
        self.open_payments.labels(chain).set(count)

    def set_halted(self, chain: str, halted: bool) -> None:
        self.chain_halted.labels(chain).set(1 if halted else 0)

    def node_stalled(self, chain: str) -> None:
        self.node_stalls.labels(chain).inc()

    def set_stalled(self, chain: str, stalled: bool) -> None:
        self.chain_stalled.labels(chain).set(1 if stalled else 0)

    def chain_lock_lost(self, chain: str) -> None:
        self.chain_locks_lost.labels(chain).inc()

    # -- HeadsObserver (scanner.chain.heads) -----------------------------------------------

    def ws_connected(self, chain: str, connected: bool) -> None:
        self.ws_connected_gauge.labels(chain).set(1 if connected else 0)
        self.ws_heads.labels(chain)

    def ws_head(self, chain: str) -> None:
        self.ws_heads.labels(chain).inc()

    def ws_disconnected(self, chain: str, reason: str) -> None:
        self.ws_disconnects.labels(chain, reason).inc()

    # -- RpcObserver -----------------------------------------------------------------------

    def request_done(self, chain: str, method: str, outcome: str, seconds: float) -> None:
        self.rpc_requests.labels(chain, method, outcome).inc()
        self.rpc_request_duration.labels(chain, method).observe(seconds)

    def retried(self, chain: str, method: str, attempt: int, error: Exception) -> None:
        self.rpc_retries.labels(chain, method).inc()
        self._log.warning(
            "rpc_retry",
            chain=chain,
            method=method,
            attempt=attempt,
            error=type(error).__name__,
            message=self._scrubber.text(str(error)),
        )

    # -- exposition ------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of the registry, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class NullMetrics(Metrics):
    """Metrics nobody serves, for a part built outside ``scanner run`` (the CLI's backfill, a
    test): counted into a registry of its own and never exported, so that no caller asks
    whether it has metrics (as :class:`~scanner.chain.retrying.NullObserver` is to the RPC
    client)."""
