"""Observability: structured logging, Prometheus metrics, health endpoints, sd_notify."""

from scanner.observe.health import Health, ObserveServer
from scanner.observe.logging import configure_logging
from scanner.observe.metrics import Metrics
from scanner.observe.sdnotify import SystemdNotifier

__all__ = [
    "Health",
    "Metrics",
    "ObserveServer",
    "SystemdNotifier",
    "configure_logging",
]
