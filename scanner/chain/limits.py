"""What providers answer when an ``eth_getLogs`` range or result is too large.

The table below is data: one row per answer listed in ``docs/providers.md``, tried in order (more
specific rows first). :func:`classify_range_error` turns a JSON-RPC error into a
:class:`~scanner.errors.RangeTooLarge` with ``suggested_size`` when the provider named a range or
a maximum, so the scan layer can jump straight to a size that works instead of halving blindly.

``suggested_size`` is always a number of blocks strictly smaller than the size that was refused
(when that size is known) and at least 1; when the message names nothing usable it is ``None`` and
the caller halves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from scanner.errors import RangeTooLarge


class Hint(Enum):
    """How a matching message tells the size that will work."""

    HEX_RANGE = "hex_range"  # groups 1, 2: a block range [0xa, 0xb] that will work
    MAX = "max"  # group 1: the largest range allowed
    MAX_EXCLUSIVE = "max_exclusive"  # group 1: the range must stay below this
    LAST_GROUP_MAX = "last_group_max"  # the last group is the largest range allowed
    FIXED = "fixed"  # the provider's known cap, in ``RangePattern.size``
    HALVE = "halve"  # nothing usable: halve


@dataclass(frozen=True, slots=True)
class RangePattern:
    """One provider answer: a regular expression over the error text, and what it tells."""

    provider: str
    regex: re.Pattern[str]
    hint: Hint
    size: int | None = None  # for Hint.FIXED
    code: int | None = None  # only when the JSON-RPC code is this one
    needs_range: bool = False  # only when more than one block was asked for


def _p(
    provider: str,
    pattern: str,
    hint: Hint,
    *,
    size: int | None = None,
    code: int | None = None,
    needs_range: bool = False,
) -> RangePattern:
    return RangePattern(provider, re.compile(pattern, re.IGNORECASE), hint, size, code, needs_range)


_N = r"([\d][\d,._]*k?)"  # a count: "10000", "10,000", "10.000", "10k"

RANGE_PATTERNS: tuple[RangePattern, ...] = (
    _p(
        "Infura/zkSync",
        r"Try with this block range \[0x([0-9a-f]+),\s*0x([0-9a-f]+)\]",
        Hint.HEX_RANGE,
    ),
    _p(
        "Alchemy",
        r"this block range should work: \[0x([0-9a-f]+),\s*0x([0-9a-f]+)\]",
        Hint.HEX_RANGE,
    ),
    _p(
        "Avalanche",
        r"requested too many blocks from (\d+) to (\d+), maximum is set to (\d+)",
        Hint.LAST_GROUP_MAX,
    ),
    _p("Cloudflare", r"Max range: (\d+)", Hint.MAX),
    _p("thirdweb", r"Maximum allowed number of requested blocks is (\d+)", Hint.MAX),
    _p("Moonriver", r"block range is too wide \(maximum (\d+)\)", Hint.MAX),
    _p("Ankr", r"block range is too wide", Hint.FIXED, size=3000, code=-32600),
    _p("Ankr (other codes)", r"block range is too wide", Hint.HALVE),
    _p("Ankr (some chains)", r"maximum \[from, to\] blocks distance: (\d+)", Hint.MAX),
    _p("QuickNode/1RPC/Blast", rf"limited to a {_N}", Hint.MAX),
    _p("BlockPI", rf"limited to {_N} block", Hint.MAX),
    _p("Blast (paid)", r"exceeds the range allowed for your plan \(\d+ > (\d+)\)", Hint.MAX),
    _p("Chainstack", r"Block range limit exceeded", Hint.HALVE),
    _p("Coinbase", rf"please limit the query to at most {_N} blocks", Hint.MAX_EXCLUSIVE),
    _p("PublicNode", rf"maximum block range: {_N}", Hint.MAX),
    _p("Hyperliquid", rf"query exceeds max block range {_N}", Hint.MAX),
    _p("Swell", rf"block range greater than {_N} max", Hint.MAX),
    _p("Somnia", rf"block range exceeds {_N}", Hint.MAX),
    _p("Merkle", r"eth_getLogs range is too large, max is (10k|1k) blocks", Hint.MAX),
    _p("Harmony", rf"query must be smaller than size {_N}", Hint.MAX),
    _p("Aurora", rf"up to a {_N} block range", Hint.MAX),
    _p("Tron", r"exceed max block range: (\d+)", Hint.MAX),
    _p("dRPC (free tier)", r"ranges over (\d+) blocks are not supported on freetier", Hint.MAX),
    _p("Arbitrum", r"logs matched by query exceeds limit of \d+", Hint.HALVE),
    # Infura's -32602: a block cap; any other "exceeds limit of N" is read the same way, and a
    # result cap misread as a block cap is harmless: a suggestion >= the refused size is dropped.
    _p("Infura (-32602)", rf"exceeds limit of {_N}", Hint.MAX),
    _p("geth-like/zkEVM/Infura", r"query returned more than \d+ results", Hint.HALVE),
    _p("LlamaRPC/Ankr/Altitude", r"query exceeds max results", Hint.HALVE),
    _p("Optimism", r"Block range is too large", Hint.HALVE),
    _p("Optimism", r"backend response too large", Hint.HALVE),
    _p("Base/Monad", r"block range too large", Hint.HALVE),
    _p("1RPC", r"response size should not greater than \d+ bytes", Hint.HALVE),
    _p("eRPC/Altitude", r"allowed block range threshold exceeded", Hint.HALVE),
    _p("eRPC/Altitude", r"range threshold exceeded", Hint.HALVE),
    _p("eRPC/Altitude", r"exceeded max allowed", Hint.HALVE),
    _p(
        "Base",
        r"no backend is currently healthy to serve traffic",
        Hint.HALVE,
        needs_range=True,
    ),
)


def error_text(message: str, data: object) -> str:
    """The message and the data of a JSON-RPC error as one searchable string.

    Providers put the useful words in either place; ``data`` may be text or a JSON value.
    """
    if data is None:
        return message
    if isinstance(data, str):
        return f"{message} {data}"
    try:
        return f"{message} {orjson.dumps(data).decode()}"
    except TypeError:
        return f"{message} {data!r}"


def parse_count(text: str) -> int:
    """``"10,000"``, ``"10.000"``, ``"10k"`` → 10000 (a trailing full stop is prose)."""
    text = text.strip().rstrip(".,").lower()
    factor = 1
    if text.endswith("k"):
        factor, text = 1000, text[:-1]
    return int(re.sub(r"[,._]", "", text)) * factor


def _hinted_size(pattern: RangePattern, match: re.Match[str]) -> int | None:
    """The block count that the matched message says will work, before clamping (None when
    the number is not one Python reads: thousands of digits)."""
    try:
        return _hinted(pattern, match)
    except ValueError:
        return None


def _hinted(pattern: RangePattern, match: re.Match[str]) -> int | None:
    if pattern.hint is Hint.HEX_RANGE:
        return int(match.group(2), 16) - int(match.group(1), 16) + 1
    if pattern.hint is Hint.MAX:
        return parse_count(match.group(1))
    if pattern.hint is Hint.MAX_EXCLUSIVE:
        return parse_count(match.group(1)) - 1
    if pattern.hint is Hint.LAST_GROUP_MAX:
        return parse_count(match.group(match.re.groups))
    if pattern.hint is Hint.FIXED:
        return pattern.size
    return None


def _usable(size: int | None, requested_size: int | None) -> int | None:
    """Keep a suggestion only if it is a real shrink: 1 ≤ size < requested_size."""
    if size is None or size < 1:
        return None
    if requested_size is not None and size >= requested_size:
        return None
    return size


def match_range_pattern(
    code: int | None, text: str, requested_size: int | None
) -> tuple[RangePattern, re.Match[str]] | None:
    """The first table row that this error matches, with its match."""
    for pattern in RANGE_PATTERNS:
        if pattern.code is not None and pattern.code != code:
            continue
        if pattern.needs_range and requested_size is not None and requested_size <= 1:
            continue
        found = pattern.regex.search(text)
        if found is not None:
            return pattern, found
    return None


def classify_range_error(
    code: int | None, message: str, data: object, requested_size: int | None
) -> RangeTooLarge | None:
    """A :class:`RangeTooLarge` if this JSON-RPC error says the range or result was too large.

    ``requested_size`` is the number of blocks asked for (``None`` if unknown, e.g. tags). The
    returned error's ``suggested_size`` is a smaller size the provider named, else ``None``.
    The message of the returned error is the provider's own (callers scrub secrets before).
    """
    found = match_range_pattern(code, error_text(message, data), requested_size)
    if found is None:
        return None
    pattern, match = found
    suggested = _usable(_hinted_size(pattern, match), requested_size)
    return RangeTooLarge(
        f"{pattern.provider}-style refusal of {requested_size or '?'} blocks: {message}",
        method="eth_getLogs",
        code=code,
        data=data,
        suggested_size=suggested,
    )


def requested_size(params: Any) -> int | None:
    """How many blocks an ``eth_getLogs`` filter asks for: 1 for ``blockHash``, None for tags."""
    if not params or not isinstance(params[0], Mapping):
        return None
    flt = params[0]
    if "blockHash" in flt:
        return 1
    try:
        return int(flt["toBlock"], 16) - int(flt["fromBlock"], 16) + 1
    except (KeyError, TypeError, ValueError):
        return None
