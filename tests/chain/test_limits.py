"""Every provider answer of docs/providers.md becomes RangeTooLarge with the right size.

Table-driven, no node. ``requested`` is the number of blocks that was refused; ``expected`` is
``suggested_size`` (``None``: the provider said nothing usable, the caller halves).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from scanner.chain.limits import (
    RANGE_PATTERNS,
    classify_range_error,
    error_text,
    match_range_pattern,
    parse_count,
    requested_size,
)
from scanner.errors import RangeTooLarge


class Case(NamedTuple):
    provider: str
    code: int | None
    message: str
    data: Any
    requested: int | None
    expected: int | None


CASES = [
    Case(
        "Infura",
        -32005,
        "query returned more than 10000 results. Try with this block range [0x10A0, 0x10FF].",
        None,
        1000,
        96,
    ),
    Case(
        "zkSync",
        -32602,
        "Query returned more than 10000 results. Try with this block range [0x1f0,0x2ef].",
        None,
        5000,
        256,
    ),
    Case(
        "Infura -32602",
        -32602,
        "eth_getLogs block range exceeds limit of 10000",
        None,
        20000,
        10000,
    ),
    Case(
        "Alchemy",
        -32602,
        "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block "
        "range and no limit on the response size, or you can request any block range with a cap "
        "of 10K logs in the response. Based on your parameters and the response size limit, this "
        "block range should work: [0x0, 0x1f3]",
        None,
        2000,
        500,
    ),
    Case(
        "Avalanche",
        -32000,
        "requested too many blocks from 0 to 5000, maximum is set to 2048",
        None,
        5001,
        2048,
    ),
    Case("Cloudflare", -32047, "Max range: 3500", None, 5000, 3500),
    Case(
        "thirdweb", -32602, "Maximum allowed number of requested blocks is 1000", None, 5000, 1000
    ),
    Case("Ankr", -32600, "block range is too wide", None, 10000, 3000),
    Case("Ankr, small request", -32600, "block range is too wide", None, 2000, None),
    Case("Ankr, other code", -32000, "block range is too wide", None, 10000, None),
    Case(
        "Ankr (some chains)", -32600, "maximum [from, to] blocks distance: 1000", None, 5000, 1000
    ),
    Case("QuickNode", -32614, "eth_getLogs is limited to a 10,000 range", None, 20000, 10000),
    Case("1RPC", -32000, "eth_getLogs is limited to a 1000 blocks range", None, 5000, 1000),
    Case("Blast", -32000, "eth_getLogs is limited to a 500 block range.", None, 5000, 500),
    Case("BlockPI", -32000, "eth_getLogs is limited to 1024 block range", None, 5000, 1024),
    Case(
        "Blast (paid)",
        -32000,
        "eth_getLogs range exceeds the range allowed for your plan (50000 > 10000).",
        None,
        50000,
        10000,
    ),
    Case("Chainstack", -32000, "Block range limit exceeded.", None, 5000, None),
    Case("Coinbase", -32000, "please limit the query to at most 1000 blocks", None, 5000, 999),
    Case("PublicNode", -32701, "exceed maximum block range: 50000", None, 100000, 50000),
    Case("Hyperliquid", -32000, "query exceeds max block range 1000", None, 5000, 1000),
    Case("Swell", -32000, "block range greater than 10000 max", None, 20000, 10000),
    Case("Somnia", -32000, "block range exceeds 1000", None, 5000, 1000),
    Case("Merkle 1k", -32000, "eth_getLogs range is too large, max is 1k blocks", None, 5000, 1000),
    Case(
        "Merkle 10k",
        -32000,
        "eth_getLogs range is too large, max is 10k blocks",
        None,
        20000,
        10000,
    ),
    Case("Harmony", -32000, "query must be smaller than size 1024", None, 5000, 1024),
    Case("Moonriver", -32603, "block range is too wide (maximum 1024)", None, 5000, 1024),
    Case(
        "Aurora",
        -32000,
        "You can make eth_getLogs requests with up to a 2,000 block range",
        None,
        5000,
        2000,
    ),
    Case("Tron", -32005, "exceed max block range: 5000", None, 10000, 5000),
    Case("Arbitrum", -32000, "logs matched by query exceeds limit of 10000", None, 5000, None),
    Case("geth", -32005, "query returned more than 10000 results", None, 5000, None),
    Case("zkEVM", -32000, "query returned more than 10000 results", None, 100, None),
    Case("LlamaRPC", -32000, "query exceeds max results 20000", None, 5000, None),
    Case("Optimism", -32000, "Block range is too large", None, 5000, None),
    Case("Optimism", -32000, "backend response too large", None, 5000, None),
    Case("Base", -32000, "block range too large", None, 5000, None),
    Case("Monad", -32602, "block range too large", None, 500, None),
    Case(
        "1RPC size", -32000, "response size should not greater than 10000000 bytes", None, 500, None
    ),
    Case("dRPC", 35, "ranges over 10000 blocks are not supported on freetier", None, 20000, 10000),
    Case("eRPC", -32012, "exceeded max allowed range", None, 5000, None),
    Case("eRPC", -32012, "range threshold exceeded", None, 5000, None),
    Case("Altitude", -32012, "allowed block range threshold exceeded", None, 5000, None),
    Case("Base LB", -32011, "no backend is currently healthy to serve traffic", None, 5000, None),
    # where the text sits: error.data, as text or as JSON
    Case(
        "data text",
        -32000,
        "execution error",
        "Try with this block range [0x1, 0x64].",
        1000,
        100,
    ),
    Case("data object", -32000, "rpc error", {"message": "Max range: 250"}, 1000, 250),
    # a suggestion that is no shrink is dropped: halve instead
    Case("no shrink", -32047, "Max range: 3500", None, 1000, None),
    Case("unknown size", -32047, "Max range: 3500", None, None, 3500),
    Case("zero", -32000, "block range exceeds 0", None, 10, None),
]

NOT_RANGE = [
    (-32000, "execution reverted", None, 100),
    (-32602, "invalid argument 0: hex string without 0x prefix", None, 100),
    (-32000, "unknown block", None, 1),
    # a one-block request cannot be "too large" for an unhealthy backend: that is transient
    (-32011, "no backend is currently healthy to serve traffic", None, 1),
]


@pytest.mark.parametrize("case", CASES, ids=[c.provider for c in CASES])
def test_classified_with_suggested_size(case: Case) -> None:
    error = classify_range_error(case.code, case.message, case.data, case.requested)
    assert isinstance(error, RangeTooLarge)
    assert error.suggested_size == case.expected
    assert error.code == case.code
    assert error.data == case.data


@pytest.mark.parametrize(("code", "message", "data", "requested"), NOT_RANGE)
def test_other_errors_are_not_range_errors(
    code: int, message: str, data: Any, requested: int
) -> None:
    assert classify_range_error(code, message, data, requested) is None


def test_every_table_row_is_exercised() -> None:
    """Each pattern is the first match of at least one case: no dead rows, no shadowed rows."""
    hit = set()
    for case in CASES:
        found = match_range_pattern(case.code, error_text(case.message, case.data), case.requested)
        assert found is not None, case.provider
        hit.add(found[0])
    assert set(RANGE_PATTERNS) == hit


@pytest.mark.parametrize(
    ("text", "value"),
    [("10000", 10000), ("10,000", 10000), ("10.000", 10000), ("2000.", 2000), ("10k", 10000)],
)
def test_parse_count(text: str, value: int) -> None:
    assert parse_count(text) == value


@pytest.mark.parametrize(
    ("params", "size"),
    [
        ([{"fromBlock": "0x10", "toBlock": "0x1f"}], 16),
        ([{"blockHash": "0x" + "ab" * 32}], 1),
        ([{"fromBlock": "0x10", "toBlock": "latest"}], None),
        ([], None),
    ],
)
def test_requested_size(params: list[Any], size: int | None) -> None:
    assert requested_size(params) == size
