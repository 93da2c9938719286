"""How the RPC client waits and reports: the backoff between attempts (``Retry-After``
honoured) and the observer that the metrics and logging layer plugs in."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from tenacity import RetryCallState
from tenacity.wait import wait_base

from scanner.errors import RpcError, RpcRateLimited


class RpcObserver(Protocol):
    """Where the client reports what it did: the metrics and logging layer plugs in here."""

    def request_done(self, chain: str, method: str, outcome: str, seconds: float) -> None:
        """One HTTP round trip finished (``outcome``: ``ok`` or an error label)."""

    def retried(self, chain: str, method: str, attempt: int, error: Exception) -> None:
        """Attempt number ``attempt`` failed with a transient ``error``; another one follows."""


class NullObserver:
    """The default observer: records nothing."""

    def request_done(self, chain: str, method: str, outcome: str, seconds: float) -> None:
        """Ignore."""

    def retried(self, chain: str, method: str, attempt: int, error: Exception) -> None:
        """Ignore."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between attempts: ``initial``·2ⁿ plus up to ``initial`` of jitter, at most
    ``maximum``; a rate limit's ``Retry-After`` is waited in full, up to ``max_retry_after``."""

    initial: float = 0.25
    maximum: float = 10.0
    max_retry_after: float = 60.0


def is_transient(error: BaseException) -> bool:
    return isinstance(error, RpcError) and error.transient


class Wait(wait_base):
    """``initial``·2ⁿ⁻¹ plus up to ``initial`` of jitter, capped at ``maximum``; on a rate
    limit, at least the server's Retry-After (itself capped at ``max_retry_after``)."""

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        b = self._backoff
        exponent = min(retry_state.attempt_number - 1, 32)
        wait = min(b.initial * 2.0**exponent + random.uniform(0, b.initial), b.maximum)
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, RpcRateLimited) and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, b.max_retry_after))
        return wait
