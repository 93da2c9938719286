"""JSON-RPC 2.0 envelopes and the one mapping of node answers onto the scanner's error tree.

Pure functions over decoded JSON: no I/O here, so every answer a provider can give is testable
without a server. :mod:`scanner.chain.rpc` calls them for each HTTP answer.

A body that is no JSON-RPC answer but java-tron's rate limiter (``{"Error": "… lack of computing
resources"}``, HTTP 200) is RpcNodeBusy, a rate limit.

Mapping of a JSON-RPC error object (first rule that applies):

1. "rate limit" / "too many requests" text, or code 429       → RpcRateLimited (``retry_after``
   from ``data.backoff_seconds`` when the provider sends it)
2. an ``eth_getLogs`` error of docs/providers.md's table         → RangeTooLarge
3. "unknown block" / "header not found" / "block not found"     → BlockNotAvailable;
   code 4444 or "pruned history" (EIP-4444: geth's expired history) → HistoryUnavailable
4. "no backend is currently healthy" (a one-block request), or an error object sent with HTTP
   5xx                                                          → RpcTransportError
5. anything else                                                → RpcResponseError
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final

import orjson

from scanner.chain.limits import classify_range_error, error_text, requested_size
from scanner.chain.shapes import show
from scanner.errors import (
    BlockNotAvailable,
    HistoryUnavailable,
    MalformedResponse,
    RangeTooLarge,
    RpcError,
    RpcNodeBusy,
    RpcRateLimited,
    RpcResponseError,
    RpcTransportError,
)

_RATE_LIMITED = re.compile(
    r"rate.?limit|rate exceeded|too many requests|request limit reached|exceeded.*\bcapacity\b",
    re.IGNORECASE,
)
_NOT_AVAILABLE = re.compile(
    r"unknown block|header not found|block not found|cannot query unfinalized data",
    re.IGNORECASE,
)
_BUSY = re.compile(r"lack of computing resources|IllegalAccessException", re.IGNORECASE)
_PEEK_WINDOW = 65_536
_PRUNED = re.compile(r"pruned history|history (has been )?pruned", re.IGNORECASE)
PRUNED_HISTORY = 4444  # EIP-4444: the node no longer keeps the block (geth's history expiry)
_TRANSIENT = re.compile(r"no backend is currently healthy|temporarily unavailable", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Where:
    """Who asked what, for error messages: chain, method, the node's redacted URL."""

    chain: str
    method: str
    url: str  # already redacted
    redact: Callable[[str], str]

    def say(self, detail: str) -> str:
        """One error message: ``chain method via url: detail`` (detail scrubbed of secrets)."""
        return f"{self.chain}: {self.method} via {self.url}: {self.redact(detail)}"

    def of(self, method: str) -> Where:
        """The same place, another method (one item of a batch)."""
        return Where(self.chain, method, self.url, self.redact)


def request(id_: int, method: str, params: Sequence[Any]) -> dict[str, Any]:
    """One JSON-RPC 2.0 request object."""
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}


#: What a JSON value costs once parsed (CPython and orjson, measured): an object about 190 bytes,
#: an array 70, any other value 60 at most (counted by the comma before it); the text itself once.
_COSTS: Final = ((b"{", 190), (b"[", 70), (b",", 60))
_MOST_PER_BYTE: Final = 250  # no byte of JSON costs more once parsed


def parsed_size(content: bytes | bytearray) -> int:
    """About how many bytes ``content`` takes once parsed (an estimate from above): a log costs
    about twice its text, a withdrawal or an access-list entry up to eight times, and
    ``[{"a":1},…]`` (3 million objects in 24 MB) thirty times."""
    return len(content) + sum(cost * content.count(char) for char, cost in _COSTS)


def decode(
    content: bytes | bytearray,
    where: Where,
    budget: int | None = None,
    typed: Callable[[bytes | bytearray], Any] | None = None,
) -> Any:
    """The body as JSON, or MalformedResponse (not JSON: an HTML error page, a truncated body).

    An answer whose parsed form would take more than ``budget`` bytes is not parsed: it is too
    large (:func:`too_large`), as one beyond the byte cap is. ``typed``, when given, decodes
    the body first into the typed values the caller expects; where it cannot (it returns
    None), the body is parsed as plain JSON."""
    size = len(content)
    if budget is not None and size * _MOST_PER_BYTE > budget and parsed_size(content) > budget:
        detail = f"an answer of {size:,} bytes that would take over {budget:,} once parsed"
        raise too_large(where, detail)
    if typed is not None and (value := typed(content)) is not None:
        return value
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        head = _peek(content, where.redact, 60)
        cut = not content.strip() or "end of data" in exc.msg
        kind, what = ("truncated", "truncated JSON") if cut else ("not_json", "not JSON")
        raise MalformedResponse(
            where.say(f"{what} ({exc.msg}): {head}"),
            chain=where.chain,
            method=where.method,
            kind=kind,
        ) from None


def result_of(envelope: Any, where: Where, params: Any, http_status: int = 200) -> Any:
    """The ``result`` of one response object, or the mapped error it carries."""
    if not isinstance(envelope, dict) or envelope.get("jsonrpc") != "2.0":
        busy = node_busy(envelope, where)
        if busy is not None:
            raise busy
        shown = _peek(envelope, where.redact)
        raise malformed(where, f"not a JSON-RPC 2.0 response object: {shown}")
    error = envelope.get("error")
    if error is not None:
        raise map_error(error, where, params, http_status)
    if "result" not in envelope:
        raise malformed(where, "response has neither result nor error")
    return envelope["result"]


def node_busy(body: Any, where: Where) -> RpcNodeBusy | None:
    """java-tron's rate limiter answers HTTP 200 with ``{"Error": "class java.lang.
    IllegalAccessException : lack of computing resources"}`` (``RateLimiterServlet``; the body
    has no ``jsonrpc``, ``id`` or ``error``): a rate limit, not a malformed answer."""
    if not isinstance(body, dict) or set(body) != {"Error"} or not isinstance(body["Error"], str):
        return None
    if not _BUSY.search(body["Error"]):
        return None
    said = where.redact(body["Error"][:_PEEK_WINDOW])[:120]  # scrubbed whole, then cut
    detail = where.say(f"the node's limiter refused: {said}")
    return RpcNodeBusy(detail, chain=where.chain, method=where.method)


def map_error(error: Any, where: Where, params: Any, http_status: int = 200) -> RpcError:
    """Translate one JSON-RPC error object (see the module docstring for the rules)."""
    if not isinstance(error, dict) or not isinstance(error.get("message", ""), str):
        return malformed(where, f"error object of the wrong shape: {_peek(error, where.redact)}")
    code = error.get("code")
    code = code if isinstance(code, int) else None
    message = where.redact(str(error.get("message", "")))
    data = _redact_data(error.get("data"), where.redact)
    text = error_text(message, data)
    kw: dict[str, Any] = {"chain": where.chain, "method": where.method}
    if code == 429 or _RATE_LIMITED.search(text):
        return RpcRateLimited(where.say(f"rate limited: {text}"), retry_after=_backoff(data), **kw)
    if where.method == "eth_getLogs":
        size = requested_size(params)
        too_large = classify_range_error(code, message, data, size)
        if too_large is not None:
            return RangeTooLarge(
                where.say(str(too_large)),
                code=code,
                data=data,
                suggested_size=too_large.suggested_size,
                **kw,
            )
    if code == PRUNED_HISTORY or _PRUNED.search(text):
        return HistoryUnavailable(where.say(text), block=_block_of(params), **kw)
    if _NOT_AVAILABLE.search(text):
        return BlockNotAvailable(where.say(text), block=_block_of(params), **kw)
    if _TRANSIENT.search(text) or http_status >= 500:
        return RpcTransportError(where.say(f"HTTP {http_status}, error {code}: {text}"), **kw)
    return RpcResponseError(where.say(f"error {code}: {text}"), code=code, data=data, **kw)


def http_error(
    status: int, headers: Mapping[str, str], content: bytes | bytearray, where: Where
) -> RpcError:
    """The error for a non-2xx HTTP answer.

    429 is a rate limit (with ``Retry-After``). A JSON-RPC error object in the body is mapped as
    such (providers send range errors with 400 or 413). Otherwise 5xx and 408 are transport
    errors (transient); any other status (401, 403, 404: a wrong URL or key) is MalformedResponse,
    which is not retried: repeating it only burns quota and hides a configuration mistake.
    """
    kw: dict[str, Any] = {"chain": where.chain, "method": where.method}
    if status == 429:
        retry_after = parse_retry_after(headers.get("retry-after"))
        return RpcRateLimited(where.say("HTTP 429"), retry_after=retry_after, **kw)
    body = _json_or_none(content)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return map_error(body["error"], where, None, status)
    if status >= 500 or status == 408:
        return RpcTransportError(where.say(f"HTTP {status}"), **kw)
    return MalformedResponse(
        where.say(f"HTTP {status}: {_peek(content, where.redact)}"), kind="http_status", **kw
    )


def too_large(where: Where, detail: str) -> RpcError:
    """An answer too large to read (``detail`` says how): for ``eth_getLogs`` a RangeTooLarge (the
    range shrinks, as for a provider's own cap), else a MalformedResponse of kind ``too_large``
    (not retried: the same question gets the same answer; a batch is asked in halves)."""
    if where.method == "eth_getLogs":
        return RangeTooLarge(where.say(detail), chain=where.chain, method=where.method)
    return malformed(where, detail, "too_large")


def order_batch(answers: Any, ids: Sequence[int], where: Where) -> list[Any]:
    """Batch answers in request order (servers may answer in any order)."""
    if isinstance(answers, dict):
        result_of(answers, where, None)  # one error for the whole batch: raises it
        raise malformed(where, "a batch answered with a single object")
    if not isinstance(answers, list):
        raise malformed(where, f"a batch answered with {type(answers).__name__}")
    by_id: dict[Any, Any] = {}
    for answer in answers:
        if isinstance(answer, dict):
            by_id[_norm_id(answer.get("id"))] = answer
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise malformed(
            where, f"{len(missing)} of {len(ids)} batch items got no answer", "batch_incomplete"
        )
    return [by_id[i] for i in ids]


_OUTCOMES: tuple[tuple[type[RpcError], str], ...] = (
    (RangeTooLarge, "range_too_large"),
    (RpcNodeBusy, "node_busy"),
    (RpcRateLimited, "rate_limited"),
    (RpcTransportError, "transport_error"),
    (BlockNotAvailable, "not_available"),
    (MalformedResponse, "malformed"),
    (RpcResponseError, "response_error"),
)


def outcome_of(error: RpcError) -> str:
    """A short, bounded label for metrics: ``transport_error``, ``rate_limited``, ... (a
    malformed answer by its kind: ``not_json``, ``truncated``, ``batch_incomplete``, ...)."""
    if isinstance(error, MalformedResponse):
        return error.kind
    for cls, label in _OUTCOMES:
        if isinstance(error, cls):
            return label
    return "error"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def malformed(where: Where, detail: str, kind: str = "malformed") -> MalformedResponse:
    """A MalformedResponse naming the place."""
    return MalformedResponse(where.say(detail), chain=where.chain, method=where.method, kind=kind)


def _norm_id(value: Any) -> int | str | None:
    """An answer's id as the request's (an int; some servers echo it as a string); None for an
    id no request carries (an object, a list, a boolean)."""
    if isinstance(value, str) and value.isdecimal() and len(value) < 20:
        return int(value)
    return value if type(value) in (int, str) else None


def _json_or_none(content: bytes | bytearray) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _peek(value: Any, redact: Callable[[str], str], length: int = 80) -> str:
    """The start of what the node sent, for an error message: scrubbed first, then cut (a key
    cut in two would leave a piece the scrubber no longer knows). Only the first
    ``_PEEK_WINDOW`` characters are looked at: the message shows fewer than that."""
    if isinstance(value, bytes | bytearray):
        text = repr(value[:_PEEK_WINDOW].decode("utf-8", "replace"))
    else:
        text = show(value, _PEEK_WINDOW)
    return redact(text)[:length]


_DATA_DEPTH = 8  # error data nested deeper is cut (a provider's data is a level or two deep)


def _redact_data(data: Any, redact: Callable[[str], str], depth: int = 0) -> Any:
    """Error data with secrets scrubbed from every string in it (providers echo URLs, keys),
    cut below :data:`_DATA_DEPTH` levels (JSON nested 1,000 deep would break what reads it)."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict | list) and depth >= _DATA_DEPTH:
        return "…"
    if isinstance(data, dict):
        return {k: _redact_data(v, redact, depth + 1) for k, v in data.items()}
    if isinstance(data, list):
        return [_redact_data(v, redact, depth + 1) for v in data]
    return data


def _backoff(data: Any) -> float | None:
    """Infura's ``data.backoff_seconds`` (and look-alikes) on a rate-limit error."""
    if not isinstance(data, dict):
        return None
    for key in ("backoff_seconds", "retry_after", "retryAfter"):
        value = data.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return max(0.0, float(value))
    return None


def _block_of(params: Any) -> int | str | None:
    """The block a request named (number or hash), for BlockNotAvailable.block."""
    if not params:
        return None
    first = params[0]
    if isinstance(first, Mapping):
        first = first.get("blockHash", first.get("fromBlock"))
    if isinstance(first, str) and first.startswith("0x") and len(first) < 20:
        return int(first, 16)
    return first if isinstance(first, (str, int)) else None


def batch_results(
    answers: list[Any], items: Sequence[tuple[str, list[Any]]], where: Where
) -> list[Any]:
    """Each item's result; if any item failed, raise the most transient of the errors."""
    values: list[Any] = []
    errors: list[RpcError] = []
    for answer, (method, params) in zip(answers, items, strict=True):
        try:
            values.append(result_of(answer, where.of(method), params))
        except RpcError as error:
            errors.append(error)
    if errors:
        raise next((e for e in errors if e.transient), errors[0])
    return values
