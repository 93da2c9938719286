"""The JSON-RPC client: the only code that talks HTTP to a node.

One ``httpx.AsyncClient`` per chain (its transport aiohttp's HTTP/1.1 keep-alive pool, bounded:
:mod:`scanner.chain.http`), orjson both ways. Every
failure leaves here as a :class:`~scanner.errors.RpcError` (see :mod:`scanner.chain.jsonrpc` for
the mapping); transient ones are retried with tenacity (exponential backoff with jitter, bounded
attempts, ``Retry-After`` honoured) and each retry is reported to an :class:`RpcObserver`.

Bounds: one attempt (connect, send, the whole answer, its parsing) has one deadline, ``timeout``
(``asyncio.timeout``: a node dripping a byte at a time cannot hold it longer), and an answer is
read as a stream up to ``max_response_bytes``: a longer one is refused without reading on (an
``eth_getLogs`` answer as RangeTooLarge, so the range shrinks; a batch is split in two; any other
as MalformedResponse ``too_large``). So is an answer whose parsed form would take more than
``PARSED_PER_BYTE`` times the cap (JSON of tiny values, ``[{"a":1},…]``, grows thirty-fold once
parsed; nothing a node sends grows more than eight-fold), estimated before it is parsed.

Failover: the client keeps one active URL; a transport failure (connection refused, timeout,
HTTP 5xx) or a garbled answer (a truncated body, a batch with items missing) moves it to the
next configured URL, so the retry goes elsewhere. Rate limits and JSON-RPC errors do not fail
over: they are about the request or the plan, not the endpoint.

Secrets: URLs (and per-URL headers) carry API keys. URLs appear in errors, logs and ``repr`` only
as :func:`scanner.secrets.redact_url` shows them; text from the node and httpx is scrubbed too.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Self, TypeVar, overload

import httpx
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from scanner.chain import budget, jsonrpc
from scanner.chain.http import http_client
from scanner.chain.jsonrpc import Where
from scanner.chain.retrying import Backoff, NullObserver, RpcObserver, Wait, is_transient
from scanner.errors import (
    ConfigError,
    MalformedResponse,
    RpcError,
    RpcTransportError,
)
from scanner.secrets import redact_url, scrub, url_secrets

T = TypeVar("T")

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a sane provider's largest answer, with room
PARSED_PER_BYTE = 8  # an answer may take this many times the cap once parsed, no more
ERROR_BODY_BYTES = 64 * 1024  # what is read of a non-2xx answer's body (an error object)


def _check_url(chain: str, url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"chain {chain!r}: RPC URL must be http(s): {redact_url(url)}")
    try:
        httpx.URL(url)
    except httpx.InvalidURL:
        raise ConfigError(f"chain {chain!r}: invalid RPC URL {redact_url(url)}") from None
    return url


class RpcClient:
    """JSON-RPC over HTTP for one chain: calls, batches, retries, failover, error mapping.

    ``timeout`` bounds one whole attempt (connect, send, read the answer, parse it);
    ``max_response_bytes`` bounds what is read of one answer;
    ``max_attempts`` bounds the attempts of one call or one batch chunk; ``backoff`` shapes the
    waits; ``batch_size`` caps the items of one JSON-RPC batch; ``max_connections`` bounds the
    keep-alive pool; ``trust_env`` lets the transport read proxy and CA settings from the
    environment (off: settings are explicit); ``transport`` replaces the network (default:
    :class:`~scanner.chain.http.AiohttpTransport`; hand-written fakes in tests);
    ``max_rps`` paces each URL (:mod:`~scanner.chain.budget`); ``headers`` go to their URL only.
    """

    def __init__(
        self,
        chain: str,
        urls: Sequence[str],
        *,
        timeout: float = 15.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_attempts: int = 6,
        observer: RpcObserver | None = None,
        backoff: Backoff | None = None,
        batch_size: int = 100,
        max_connections: int = 16,
        trust_env: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        max_rps: float | None = None,
        headers: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        if not urls:
            raise ConfigError(f"chain {chain!r}: no RPC URL")
        if max_attempts < 1 or batch_size < 1:
            raise ConfigError(f"chain {chain!r}: max_attempts and batch_size must be ≥ 1")
        self.chain = chain
        self._urls = [_check_url(chain, u) for u in urls]
        self._shown = [redact_url(u) for u in self._urls]
        self._headers = {u: dict(h) for u, h in (headers or {}).items()}  # per URL (secrets)
        self._secrets = [s for u in self._urls for s in url_secrets(u)]
        self._secrets += [v for h in self._headers.values() for v in h.values() if v]
        self._budgets = {u: budget.shared(u, max_rps) for u in self._urls} if max_rps else {}
        self._active = 0
        self._ids = itertools.count(1)
        self._max_attempts = max_attempts
        self._timeout = timeout
        self._max_bytes = max_response_bytes
        self._budget = max_response_bytes * PARSED_PER_BYTE
        self._wait = Wait(backoff or Backoff())
        self._batch_size = batch_size
        self._observer: RpcObserver = observer or NullObserver()
        self._http = http_client(timeout, max_connections, trust_env, transport)

    def __repr__(self) -> str:
        return f"RpcClient(chain={self.chain!r}, urls={self._shown!r})"

    @property
    def urls(self) -> list[str]:
        """The configured URLs, redacted (for display)."""
        return list(self._shown)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- single calls ----------------------------------------------------------------------

    @overload
    async def call(self, method: str, params: Sequence[Any] = ...) -> Any: ...

    @overload
    async def call(
        self, method: str, params: Sequence[Any] = ..., *, parse: Callable[[Any], T]
    ) -> T: ...

    async def call(
        self,
        method: str,
        params: Sequence[Any] = (),
        *,
        parse: Callable[[Any], Any] | None = None,
    ) -> Any:
        """One JSON-RPC call; its ``result``, passed through ``parse`` when given.

        ``parse`` runs inside the retry loop: raising a transient error there (e.g.
        BlockNotAvailable for a ``null`` block) retries the call like a transport failure.
        """
        params = list(params)

        async def send(where: Where, url: str) -> Any:
            body = orjson.dumps(jsonrpc.request(next(self._ids), method, params))
            envelope = jsonrpc.decode(await self._post(url, body, where), where, self._budget)
            result = jsonrpc.result_of(envelope, where, params)
            return parse(result) if parse is not None else result

        return await self._retrying(method, send)

    # -- batches ---------------------------------------------------------------------------

    @overload
    async def batch(
        self, calls: Sequence[tuple[str, Sequence[Any]]], *, label: str | None = None
    ) -> list[Any]: ...

    @overload
    async def batch(
        self,
        calls: Sequence[tuple[str, Sequence[Any]]],
        *,
        parse: Callable[[int, Any], T],
        label: str | None = None,
        typed: Callable[[bytes | bytearray], Any] | None = None,
        ready: Callable[[], Awaitable[object]] | None = None,
    ) -> list[T]: ...

    async def batch(
        self,
        calls: Sequence[tuple[str, Sequence[Any]]],
        *,
        parse: Callable[[int, Any], Any] | None = None,
        label: str | None = None,
        typed: Callable[[bytes | bytearray], Any] | None = None,
        ready: Callable[[], Awaitable[object]] | None = None,
    ) -> list[Any]:
        """Many calls in JSON-RPC batches of at most ``batch_size``; results in call order.

        An error in any item raises (the most transient one, so that a rate-limited item retries
        the chunk). ``parse(index, result)`` runs inside the retry loop, as for :meth:`call`;
        ``index`` is the item's position in ``calls``. Chunks are sent concurrently (the
        connection pool bounds how many at once). ``label``: what metrics and logs call the
        request (default ``batch:<method>``, or ``batch:mixed``). ``typed``: a decoder of the
        answer into typed values (:func:`jsonrpc.decode`), tried before plain JSON.
        ``ready``: awaited once an answer is in, before it is parsed (what the parse needs that
        the caller is still making, such as the addresses a whole answer is sifted by); the time
        it takes is not the node's, and counts against no attempt's ``rpc_timeout``.
        """
        parts = await asyncio.gather(
            *(
                self._batch_chunk(
                    calls[offset : offset + self._batch_size], offset, parse, label, typed, ready
                )
                for offset in range(0, len(calls), self._batch_size)
            )
        )
        return [result for part in parts for result in part]

    async def _batch_chunk(
        self,
        chunk: Sequence[tuple[str, Sequence[Any]]],
        offset: int,
        parse: Callable[[int, Any], Any] | None,
        label: str | None = None,
        typed: Callable[[bytes | bytearray], Any] | None = None,
        ready: Callable[[], Awaitable[object]] | None = None,
    ) -> list[Any]:
        if label is None:
            methods = {m for m, _ in chunk}
            label = f"batch:{methods.pop() if len(methods) == 1 else 'mixed'}"
        items = [(m, list(p)) for m, p in chunk]

        async def send(where: Where, url: str) -> list[Any]:
            ids = [next(self._ids) for _ in items]
            body = orjson.dumps(
                [jsonrpc.request(i, m, p) for i, (m, p) in zip(ids, items, strict=True)]
            )
            content = await self._post(url, body, where)
            answers = jsonrpc.decode(content, where, self._budget, typed)
            ordered = jsonrpc.order_batch(answers, ids, where)
            values = jsonrpc.batch_results(ordered, items, where)
            if parse is None:
                return values
            if ready is not None:
                await _off_deadline(ready)
            return [parse(offset + n, v) for n, v in enumerate(values)]

        try:
            return await self._retrying(label, send)
        except MalformedResponse as error:
            if error.kind != "too_large" or len(chunk) < 2:
                raise
        half = len(chunk) // 2  # an answer too large for one read: ask in two halves
        first, second = await asyncio.gather(
            self._batch_chunk(chunk[:half], offset, parse, label, typed, ready),
            self._batch_chunk(chunk[half:], offset + half, parse, label, typed, ready),
        )
        return first + second

    # -- the attempt loop ------------------------------------------------------------------

    async def _retrying(self, label: str, send: Callable[[Where, str], Awaitable[T]]) -> T:
        """Run ``send`` against the active URL until it succeeds or a non-transient error."""

        def report(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            if isinstance(error, Exception):
                self._observer.retried(self.chain, label, state.attempt_number, error)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception(is_transient),
            before_sleep=report,
            reraise=True,
        )
        return await retrying(self._attempt, label, send)

    async def _attempt(self, label: str, send: Callable[[Where, str], Awaitable[T]]) -> T:
        """One round trip, timed and reported; a transport failure fails over."""
        index = self._active
        where = Where(self.chain, label, self._shown[index], self.redact)
        started = time.perf_counter()
        try:
            result = await self._within_deadline(send, where, self._urls[index])
        except RpcError as error:
            self._observer.request_done(
                self.chain, label, jsonrpc.outcome_of(error), time.perf_counter() - started
            )
            if isinstance(error, RpcTransportError) or (
                isinstance(error, MalformedResponse) and error.transient
            ):
                self._fail_over(index)
            raise
        self._observer.request_done(self.chain, label, "ok", time.perf_counter() - started)
        return result

    async def _within_deadline(
        self, send: Callable[[Where, str], Awaitable[T]], where: Where, url: str
    ) -> T:
        """``send`` under the attempt's one deadline; running out of it is a transport error."""
        try:
            async with asyncio.timeout(self._timeout) as deadline:
                token = _DEADLINE.set(deadline)
                try:
                    return await send(where, url)
                finally:
                    _DEADLINE.reset(token)
        except TimeoutError:
            detail = f"no whole answer within {self._timeout:g} s (rpc_timeout)"
            raise RpcTransportError(
                where.say(detail), chain=self.chain, method=where.method
            ) from None

    @property
    def active_url(self) -> str:
        """The URL calls go to now, redacted (for display)."""
        return self._shown[self._active]

    def use_next_url(self) -> bool:
        """Move to the next configured URL (a stalled node); False when there is only one."""
        if len(self._urls) < 2:
            return False
        self._active = (self._active + 1) % len(self._urls)
        return True

    def _fail_over(self, failed: int) -> None:
        """Move to the next URL, unless a concurrent call already did."""
        if self._active == failed and len(self._urls) > 1:
            self._active = (failed + 1) % len(self._urls)

    async def _post(self, url: str, body: bytes, where: Where) -> bytes:
        """POST ``body``; the raw answer of a 2xx (at most ``max_response_bytes``), else the
        mapped HTTP error (read from the first :data:`ERROR_BODY_BYTES` of its body)."""
        await budget.take(self._budgets.get(url))
        try:
            headers = self._headers.get(url)  # a provider's key: a secret, scrubbed as the URLs
            async with self._http.stream("POST", url, content=body, headers=headers) as response:
                ok = 200 <= response.status_code < 300
                limit = self._max_bytes if ok else ERROR_BODY_BYTES
                content = await _read_capped(response, limit, where, refuse=ok)
        except httpx.HTTPError as exc:
            detail = f"{type(exc).__name__}: {exc}"
            error = RpcTransportError(where.say(detail), chain=self.chain, method=where.method)
            # keep httpx's error as the cause only if its text holds no secret
            raise error from (exc if self.redact(str(exc)) == str(exc) else None)
        if ok:
            return content
        raise jsonrpc.http_error(response.status_code, response.headers, content, where)

    def redact(self, text: str) -> str:
        """``text`` with this client's URLs and every key in them scrubbed."""
        return scrub(text, self._secrets)


#: The deadline of the attempt under way in this task (:meth:`RpcClient._within_deadline`).
_DEADLINE: ContextVar[asyncio.Timeout | None] = ContextVar("rpc_deadline", default=None)


async def _off_deadline(wait: Callable[[], Awaitable[object]]) -> None:
    """``wait()`` with the attempt's deadline stopped, and as much of it left after as before:
    what the caller still makes for an answer's parse is not the node's time."""
    deadline = _DEADLINE.get()
    when = None if deadline is None else deadline.when()
    if deadline is None or when is None:
        await wait()
        return
    loop = asyncio.get_running_loop()
    left = when - loop.time()
    deadline.reschedule(None)
    try:
        await wait()
    finally:
        deadline.reschedule(loop.time() + left)


async def _read_capped(
    response: httpx.Response, limit: int, where: Where, *, refuse: bool
) -> bytes:
    """The body, read as it arrives, up to ``limit`` bytes (decompressed). Beyond it, ``refuse``
    raises the too-large error at once (a declared ``Content-Length`` beyond it, before reading
    anything); else the body is cut there (an error page: its start says enough).

    The chunks are joined once, at the end: a buffer grown chunk by chunk is copied again each
    time it outgrows its room (a 1.5 MB ``eth_getLogs`` answer arrives in a few chunks)."""
    declared = response.headers.get("content-length", "")
    if refuse and declared.isdecimal() and int(declared) > limit:
        raise jsonrpc.too_large(where, _longer_than(limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            if refuse:
                raise jsonrpc.too_large(where, _longer_than(limit))
            return b"".join(chunks)[:limit]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _longer_than(limit: int) -> str:
    return f"answer larger than {limit:,} bytes (rpc_max_response_bytes)"
