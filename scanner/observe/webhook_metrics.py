"""The delivery worker's metrics, registered on the scanner's registry by
:class:`scanner.observe.metrics.Metrics` (``metrics.webhooks``). Labelled by endpoint index
(the position in ``[[webhooks]]``), never by URL."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ATTEMPT_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
OUTCOMES = ("delivered", "http_error", "redirect", "timeout", "transport")


class WebhookMetrics:
    """Registered on ``registry``; without one, on a registry of their own nobody serves."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = CollectorRegistry() if registry is None else registry
        self.attempts = Counter(
            "scanner_webhook_deliveries",
            "Webhook delivery attempts, by endpoint index and outcome "
            "(delivered, http_error, redirect, timeout, transport).",
            ("endpoint", "outcome"),
            registry=registry,
        )
        self.failed = Counter(
            "scanner_webhook_deliveries_failed",
            "Deliveries that used up max_attempts and are now failed.",
            ("endpoint",),
            registry=registry,
        )
        self.duration = Histogram(
            "scanner_webhook_attempt_duration_seconds",
            "Time of one delivery attempt (the HTTP request).",
            ("endpoint",),
            buckets=ATTEMPT_SECONDS_BUCKETS,
            registry=registry,
        )
        self.pending = Gauge(
            "scanner_webhook_pending_deliveries",
            "Deliveries not yet delivered nor failed.",
            ("endpoint",),
            registry=registry,
        )
        self.oldest_age = Gauge(
            "scanner_webhook_oldest_pending_age_seconds",
            "Age of the oldest undelivered event (0 when none is pending).",
            ("endpoint",),
            registry=registry,
        )

    def add_endpoint(self, index: int) -> None:
        """The endpoint's series at zero, so rates and alerts work before the first delivery."""
        label = str(index)
        for outcome in OUTCOMES:
            self.attempts.labels(label, outcome)
        self.failed.labels(label)
        self.duration.labels(label)
        self.pending.labels(label).set(0)
        self.oldest_age.labels(label).set(0)

    def attempted(self, index: int, outcome: str, seconds: float) -> None:
        self.attempts.labels(str(index), outcome).inc()
        self.duration.labels(str(index)).observe(seconds)

    def gave_up(self, index: int) -> None:
        self.failed.labels(str(index)).inc()

    def backlog(self, index: int, pending: int, oldest_age: float) -> None:
        self.pending.labels(str(index)).set(pending)
        self.oldest_age.labels(str(index)).set(oldest_age)
