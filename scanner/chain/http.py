"""The RPC client's HTTP side: its connection pool, the headers every request carries, and
httpx's own request log lines scrubbed of URLs (they carry API keys).

The client is httpx's (its API is the seam: tests hand it fake transports), but its default
transport is :class:`AiohttpTransport`: aiohttp's HTTP/1.1 connection pool and its C parser
read the answers. httpx's own transport (httpcore and h11, pure Python) spends four to five
times the CPU on reading a large ``eth_getLogs`` answer, which is most of what a backfill that
reads every log costs beyond parsing it.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator

import aiohttp
import httpx
import yarl

from scanner.secrets import scrub, url_secrets

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


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport on an aiohttp connection pool of at most ``max_connections``.

    It carries bytes: httpx keeps the rest (headers, cookies, redirects, decoding a compressed
    answer), so aiohttp decompresses nothing, follows no redirect and keeps no cookie. With
    ``trust_env`` the proxy settings of the environment (``HTTP_PROXY``, ``NO_PROXY``, …) are
    aiohttp's to read (httpx reads none beside a transport of its caller's). TLS is verified
    as httpx verifies it (:func:`httpx.create_ssl_context`, ``SSL_CERT_FILE`` with
    ``trust_env``). The answer's body
    is handed on chunk by chunk as it arrives (the caller caps what it reads); an answer not
    read to its end closes its connection. aiohttp's errors become httpx's (connect, read,
    timeout, protocol), their text scrubbed of the request URL's secrets and without aiohttp's
    exception as the cause (its text may carry the URL).
    """

    def __init__(self, max_connections: int, *, trust_env: bool = False) -> None:
        self._max_connections = max_connections
        self._trust_env = trust_env
        self._ssl = httpx.create_ssl_context(trust_env=trust_env)
        self._session: aiohttp.ClientSession | None = None

    def _pool(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:  # made in the loop that uses it
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, ssl=self._ssl, keepalive_timeout=5.0
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=self._trust_env,
                timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=("Accept-Encoding", "User-Agent"),  # httpx's are sent
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.userinfo:  # httpx sent it as an Authorization header already
            url = url.copy_with(username=None, password=None)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        timeouts = request.extensions.get("timeout", {})
        try:
            response = await self._pool().request(
                request.method,
                yarl.URL(str(url), encoded=True),
                headers=headers,
                data=await request.aread(),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeouts.get("pool"),
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
            )
        except Exception as exc:
            raise _httpx_error(exc, request) from None
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": b""},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _Body(httpx.AsyncByteStream):
    """An aiohttp answer's body as httpx reads it: chunks as they arrive."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:
            raise _httpx_error(exc, self._request) from None

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # the connection goes back to the pool
        else:
            self._response.close()  # unread bytes: the connection is closed


def _httpx_error(exc: Exception, request: httpx.Request) -> Exception:
    """aiohttp's (or the socket's) error as the httpx error it corresponds to."""
    if isinstance(exc, httpx.HTTPError):
        return exc
    text = scrub(f"{type(exc).__name__}: {exc}", url_secrets(str(request.url)))
    kind: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(exc, TimeoutError):  # aiohttp's read timeout is one
        kind = httpx.ReadTimeout
    elif isinstance(exc, aiohttp.ClientConnectorError | ssl.SSLError):
        kind = httpx.ConnectError
    elif isinstance(
        exc,
        aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError,
    ):  # cut short, or an answer aiohttp could not parse
        kind = httpx.RemoteProtocolError
    elif isinstance(exc, aiohttp.ClientError | OSError):
        kind = httpx.ReadError
    else:
        return exc
    return kind(text, request=request)


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
        transport=transport or AiohttpTransport(max_connections, trust_env=trust_env),
    )
    _guard_httpx_logger()
    return http
