"""The RPC client's HTTP side: its connection pool, the headers every request carries, and
httpx's own request log lines scrubbed of URLs (they carry API keys)."""

from __future__ import annotations

import logging

import httpx

from scanner.secrets import scrub

_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "User-Agent": "ctrip-scanner",
}


class _RedactUrls(logging.Filter):
    """Scrubs URLs from httpx's own request log lines (``HTTP Request: POST <url>``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                scrub(str(a)) if isinstance(a, (str, httpx.URL)) else a for a in record.args
            )
        return True


def _guard_httpx_logger() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactUrls) for f in logger.filters):
        logger.addFilter(_RedactUrls())


def http_client(
    timeout: float,
    max_connections: int,
    trust_env: bool,
    transport: httpx.AsyncBaseTransport | None,
) -> httpx.AsyncClient:
    """The client's HTTP/1.1 connection pool (keep-alive up to ``max_connections``)."""
    http = httpx.AsyncClient(
        headers=_HEADERS,
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        http1=True,
        http2=False,
        trust_env=trust_env,
        transport=transport,
    )
    _guard_httpx_logger()
    return http
