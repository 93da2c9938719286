"""The mapping of node answers onto the error tree, without a node (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from scanner.chain import jsonrpc
from scanner.chain.jsonrpc import Where
from scanner.errors import (
    BlockNotAvailable,
    HistoryUnavailable,
    MalformedResponse,
    RangeTooLarge,
    RpcRateLimited,
    RpcResponseError,
    RpcTransportError,
)
from scanner.secrets import scrub

SECRET = "SECRETKEY123"


def where(method: str = "eth_getLogs") -> Where:
    return Where("testchain", method, "http://node/***", lambda t: scrub(t, [SECRET]))


def answer(error: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "error": error}


LOGS_PARAMS = [{"fromBlock": "0x0", "toBlock": "0x3e7"}]  # 1000 blocks


def test_result_and_null_result() -> None:
    assert jsonrpc.result_of({"jsonrpc": "2.0", "id": 1, "result": "0x1"}, where(), []) == "0x1"
    assert jsonrpc.result_of({"jsonrpc": "2.0", "id": 1, "result": None}, where(), []) is None


@pytest.mark.parametrize(
    "envelope",
    [
        {"jsonrpc": "2.0", "id": 1},
        {"id": 1, "result": "0x1"},
        {"jsonrpc": "1.0", "id": 1, "result": "0x1"},
        ["not", "an", "object"],
        "0x1",
        {"jsonrpc": "2.0", "id": 1, "error": "a string"},
        {"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": 42}},
    ],
)
def test_wrong_shapes_are_malformed(envelope: Any) -> None:
    with pytest.raises(MalformedResponse):
        jsonrpc.result_of(envelope, where(), [])


def test_not_json_is_malformed() -> None:
    with pytest.raises(MalformedResponse, match="not JSON"):
        jsonrpc.decode(b"<html>502 Bad Gateway</html>", where())


def test_plain_error_keeps_code_and_data() -> None:
    with pytest.raises(RpcResponseError) as caught:
        jsonrpc.result_of(answer({"code": 3, "message": "reverted", "data": "0x08"}), where(), [])
    assert type(caught.value) is RpcResponseError
    assert (caught.value.code, caught.value.data, caught.value.chain) == (3, "0x08", "testchain")
    assert not caught.value.transient


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [
        ({"code": -32005, "message": "daily request count exceeded, request rate limited"}, None),
        ({"code": -32016, "message": "Too Many Requests"}, None),
        (
            {"code": 429, "message": "Your app has exceeded its compute units per second capacity"},
            None,
        ),
        (
            {
                "code": -32005,
                "message": "project ID request rate exceeded",
                "data": {"see": "https://infura.io/dashboard", "backoff_seconds": 30.0},
            },
            30.0,
        ),
    ],
)
def test_rate_limits(error: dict[str, Any], retry_after: float | None) -> None:
    mapped = jsonrpc.map_error(error, where(), LOGS_PARAMS)
    assert isinstance(mapped, RpcRateLimited)
    assert mapped.transient
    assert mapped.retry_after == retry_after


def test_range_error_only_for_get_logs() -> None:
    error = {"code": -32005, "message": "query returned more than 10000 results"}
    assert isinstance(jsonrpc.map_error(error, where(), LOGS_PARAMS), RangeTooLarge)
    assert type(jsonrpc.map_error(error, where("eth_call"), [])) is RpcResponseError


def test_range_error_carries_suggestion_and_context() -> None:
    error = {"code": -32602, "message": "Max range: 250"}
    mapped = jsonrpc.map_error(error, where(), LOGS_PARAMS)
    assert isinstance(mapped, RangeTooLarge)
    assert (mapped.suggested_size, mapped.method, mapped.chain) == (250, "eth_getLogs", "testchain")
    assert "testchain" in str(mapped) and "Max range: 250" in str(mapped)


@pytest.mark.parametrize("message", ["unknown block", "header not found", "block not found"])
def test_unknown_block_is_not_available(message: str) -> None:
    params = [{"blockHash": "0x" + "ab" * 32}]
    mapped = jsonrpc.map_error({"code": -32000, "message": message}, where(), params)
    assert isinstance(mapped, BlockNotAvailable)
    assert mapped.transient
    assert mapped.block == "0x" + "ab" * 32


@pytest.mark.parametrize(
    "error",
    [
        {"code": 4444, "message": "Pruned history unavailable"},  # geth's expired history
        {"code": -32000, "message": "pruned history unavailable"},
    ],
)
def test_pruned_history_is_a_block_the_node_cannot_show(error: dict[str, object]) -> None:
    params = [{"fromBlock": "0x5", "toBlock": "0x9"}]
    mapped = jsonrpc.map_error(error, where(), params)
    assert isinstance(mapped, HistoryUnavailable)
    assert not mapped.transient and mapped.block == 5


def test_unhealthy_backend_on_one_block_is_transient() -> None:
    error = {"code": -32011, "message": "no backend is currently healthy to serve traffic"}
    one_block = [{"fromBlock": "0x5", "toBlock": "0x5"}]
    assert isinstance(jsonrpc.map_error(error, where(), one_block), RpcTransportError)
    assert isinstance(jsonrpc.map_error(error, where(), LOGS_PARAMS), RangeTooLarge)


def test_error_text_is_scrubbed_of_secrets() -> None:
    error = {
        "code": -32000,
        "message": f"invalid project id {SECRET} for https://mainnet.infura.io/v3/{SECRET}",
        "data": {"url": f"https://mainnet.infura.io/v3/{SECRET}"},
    }
    mapped = jsonrpc.map_error(error, where("eth_call"), [])
    assert isinstance(mapped, RpcResponseError)
    assert SECRET not in str(mapped) and SECRET not in repr(mapped)
    assert SECRET not in str(mapped.data)


def test_http_429_with_retry_after() -> None:
    mapped = jsonrpc.http_error(429, {"retry-after": "2"}, b"slow down", where())
    assert isinstance(mapped, RpcRateLimited) and mapped.retry_after == 2.0


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_http_5xx_is_transport(status: int) -> None:
    assert isinstance(jsonrpc.http_error(status, {}, b"<html>", where()), RpcTransportError)


def test_http_error_with_json_rpc_body_is_mapped_as_such() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Max range: 100"}}'
    mapped = jsonrpc.http_error(400, {}, body, where())
    assert isinstance(mapped, RangeTooLarge)  # no params at this level: size unknown
    assert mapped.suggested_size == 100


def test_http_403_is_not_retried() -> None:
    mapped = jsonrpc.http_error(403, {}, b"invalid api key", where())
    assert isinstance(mapped, MalformedResponse) and not mapped.transient


def test_retry_after_forms() -> None:
    assert jsonrpc.parse_retry_after("3") == 3.0
    assert jsonrpc.parse_retry_after("0.5") == 0.5
    assert jsonrpc.parse_retry_after(None) is None
    assert jsonrpc.parse_retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    parsed = jsonrpc.parse_retry_after(later)
    assert parsed is not None and 25 < parsed <= 30


def test_batch_answers_are_put_in_request_order() -> None:
    answers = [
        {"jsonrpc": "2.0", "id": 3, "result": "c"},
        {"jsonrpc": "2.0", "id": "1", "result": "a"},
        {"jsonrpc": "2.0", "id": 2, "result": "b"},
    ]
    ordered = jsonrpc.order_batch(answers, [1, 2, 3], where())
    assert [a["result"] for a in ordered] == ["a", "b", "c"]


def test_batch_with_a_missing_answer_is_malformed() -> None:
    answers = [{"jsonrpc": "2.0", "id": 1, "result": "a"}]
    with pytest.raises(MalformedResponse, match="1 of 2"):
        jsonrpc.order_batch(answers, [1, 2], where())


def test_batch_answered_by_one_error_raises_it() -> None:
    single = {"jsonrpc": "2.0", "id": None, "error": {"code": -32005, "message": "rate limited"}}
    with pytest.raises(RpcRateLimited):
        jsonrpc.order_batch(single, [1, 2], where())


@pytest.mark.parametrize("before", range(40, 90, 3))
def test_a_key_across_the_cut_of_a_quoted_answer_leaves_no_piece(before: int) -> None:
    """What the node sent is scrubbed whole, then cut: a key that the cut would split leaves no
    piece of itself in the message (the message shows about 60 to 80 characters)."""
    body = ("x" * before + SECRET + " and more").encode()
    shown = [
        str(jsonrpc.http_error(401, {}, body, where())),
        str(jsonrpc.map_error(["x" * before + SECRET], where(), [])),
    ]
    with pytest.raises(MalformedResponse) as not_json:
        jsonrpc.decode(body, where())
    with pytest.raises(MalformedResponse) as not_an_envelope:
        jsonrpc.result_of(["x" * before + SECRET], where(), [])
    shown += [str(not_json.value), str(not_an_envelope.value)]
    for text in shown:
        assert "xxxxxxxx" in text  # the start of the answer is shown
        assert not any(SECRET[:n] in text for n in range(4, len(SECRET) + 1)), text
