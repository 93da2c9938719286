"""One HTTP attempt of a delivery and what came of it; httpx's errors are translated here.

Redirects are not followed: a 3xx is a failure, reported as such. ``timeout`` is one deadline
for the whole attempt (connect, send, wait, read), not httpx's per phase: a receiver sending a
byte every few seconds cannot hold an attempt longer. The status decides; of the answer's body
at most :data:`RESPONSE_CAP` bytes are read (as they arrive, never decompressed) and the rest is
dropped with the connection. Whatever a receiver sends, an attempt ends in an :class:`Outcome`.
Error texts name the kind of failure and the status, never the URL (it may carry credentials).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import httpx

from scanner.deliver.message import retry_after

RETRY_AFTER_STATUSES = (429, 503)
RESPONSE_CAP = 16 * 1024  # bytes of an answer's body read: a receiver's body is not used


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
        if self._client is None:  # no timeout of httpx's own: the attempt's deadline is ours
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=None)
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
                code, after = await self._exchange(url, raw, headers)
        except (TimeoutError, httpx.TimeoutException) as exc:
            return _failed(
                "timeout", f"timed out after {limit:g} s ({type(exc).__name__})", started
            )
        except (httpx.HTTPError, OSError) as exc:
            return _failed("transport", f"connection failed ({type(exc).__name__})", started)
        except Exception as exc:  # whatever else a URL or an answer makes of httpx: an outcome
            return _failed("transport", f"request failed ({type(exc).__name__})", started)
        return _judge(code, after, now, time.monotonic() - started)

    async def _exchange(
        self, url: str, raw: bytes, headers: dict[str, str]
    ) -> tuple[int, str | None]:
        """The answer's status and ``Retry-After``, having read at most RESPONSE_CAP bytes."""
        client = self._open()
        request = client.build_request("POST", url, content=raw, headers=headers)
        response = await client.send(request, stream=True)
        try:
            read = 0
            chunks = cast(AsyncGenerator[bytes, None], response.aiter_raw())
            async with aclosing(chunks):
                async for chunk in chunks:
                    read += len(chunk)
                    if read >= RESPONSE_CAP:
                        break
        finally:
            await response.aclose()  # unread: the connection is closed, not reused
        return response.status_code, response.headers.get("Retry-After")


def _failed(label: str, error: str, started: float) -> Outcome:
    return Outcome(label, error=error, seconds=time.monotonic() - started)


def _judge(code: int, after_header: str | None, now: datetime, seconds: float) -> Outcome:
    if 200 <= code < 300:
        return Outcome("delivered", status=code, seconds=seconds)
    if 300 <= code < 400:
        return Outcome(
            "redirect",
            status=code,
            error=f"HTTP {code}: redirects are not followed",
            seconds=seconds,
        )
    after = retry_after(after_header, now) if code in RETRY_AFTER_STATUSES else None
    return Outcome(
        "http_error", status=code, error=f"HTTP {code}", retry_after=after, seconds=seconds
    )
