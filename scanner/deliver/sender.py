"""One HTTP attempt of a delivery and what came of it; httpx's errors are translated here.

Redirects are not followed: a 3xx is a failure, reported as such. ``timeout`` bounds the whole
attempt (connect, send, wait, read). Error texts name the kind of
failure and the status, never the URL (it may carry credentials).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

import httpx

from scanner.deliver.message import retry_after

RETRY_AFTER_STATUSES = (429, 503)


@dataclass(frozen=True)
class Outcome:
    """``label`` is the metric's outcome: delivered, http_error, redirect, timeout, transport."""

    label: str
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    seconds: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.label == "delivered"


class Sender:
    """POSTs bodies with one shared connection pool; ``aclose`` when done."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    def _open(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def post(
        self, url: str, raw: bytes, headers: dict[str, str], limit: float, now: datetime
    ) -> Outcome:
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):  # the whole attempt, not each phase
                response = await self._open().post(url, content=raw, headers=headers)
        except (TimeoutError, httpx.TimeoutException) as exc:
            return Outcome(
                "timeout",
                error=f"timed out after {limit:g} s ({type(exc).__name__})",
                seconds=time.monotonic() - started,
            )
        except (httpx.HTTPError, OSError) as exc:
            return Outcome(
                "transport",
                error=f"connection failed ({type(exc).__name__})",
                seconds=time.monotonic() - started,
            )
        seconds = time.monotonic() - started
        return _judge(response, now, seconds)


def _judge(response: httpx.Response, now: datetime, seconds: float) -> Outcome:
    code = response.status_code
    if 200 <= code < 300:
        return Outcome("delivered", status=code, seconds=seconds)
    if 300 <= code < 400:
        return Outcome(
            "redirect",
            status=code,
            error=f"HTTP {code}: redirects are not followed",
            seconds=seconds,
        )
    after = None
    if code in RETRY_AFTER_STATUSES:
        after = retry_after(response.headers.get("Retry-After"), now)
    return Outcome(
        "http_error", status=code, error=f"HTTP {code}", retry_after=after, seconds=seconds
    )
