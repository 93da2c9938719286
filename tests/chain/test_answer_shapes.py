"""Any JSON a node or a verifier answers, fed to every reader: nothing but a ScannerError comes
out, and what a reader returns is safe for the core and the scan layer to use.

A hand-written fake node (no network) answers each request with the JSON hypothesis draws: as the
``result``, as the ``error`` object, or as the whole response (a batch's too), including values
that are almost right (a valid log, header or receipt with fields dropped or replaced) and JSON
nested deeper than Python's ``repr`` can show.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scanner.chain.reader import ChainReader
from scanner.chain.rpc import RpcClient
from scanner.core.decode import (
    TRANSFER_TOPIC,
    decode_transfer_logs,
    native_transfers,
    recipients_of,
)
from scanner.core.model import Header
from scanner.core.ranges import RangeSizer
from scanner.core.reorg import logs_agree
from scanner.db.verify import Awaiting
from scanner.errors import MalformedResponse, ScannerError
from scanner.scan.fetch import log_blocks
from scanner.scan.lookback import WHOLE_LOGS_ABOVE, token_logs
from scanner.scan.verify import _log_problems, _native_problems
from tests.chain.conftest import FAST
from tests.chain.test_reader_validation import fake_reader

HASH = "0x" + "ab" * 32
TOKEN = "0x" + "11" * 20
HOLDER = "0x" + "00" * 12 + "22" * 20
LOG = {
    "address": TOKEN,
    "topics": [TRANSFER_TOPIC, HOLDER, HOLDER],
    "data": "0x" + "00" * 31 + "05",
    "blockNumber": "0x7",
    "blockHash": HASH,
    "transactionHash": HASH,
    "logIndex": "0x0",
    "removed": False,
    "blockTimestamp": "0x64",
}
TX = {"hash": HASH, "from": TOKEN, "to": TOKEN, "value": "0x5"}
BLOCK = {"number": "0x7", "hash": HASH, "parentHash": HASH, "timestamp": "0x64"}
RECEIPT = {"blockHash": HASH, "status": "0x1", "logs": [LOG]}
DEEP = b"[" * 1000 + b"]" * 1000  # orjson reads up to 1,024 levels; repr() fails at ~1,000
DEEPER = b"[" * 100_000 + b"]" * 100_000  # beyond any parser's depth (msgspec's: Python's limit)


@dataclass(frozen=True)
class Raw:
    """JSON text spliced into the answer as it is (orjson cannot write it)."""

    text: bytes


HEXES = st.sampled_from(["0x", "0x0", "0x7", "0x_7", "0x 7", "7", "0xzz", HASH, TOKEN, HOLDER])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=70)
    | HEXES
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=9), inner),
    max_leaves=12,
)


def near(valid: Mapping[str, Any], **inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` with any of its fields dropped or replaced by any JSON (or by ``inner``'s)."""
    return st.fixed_dictionaries(
        {},
        optional={k: inner.get(k, st.just(v)) | JSON for k, v in valid.items()},
    )


LOGS = st.lists(near(LOG) | JSON, max_size=4)
SHAPES: dict[str, st.SearchStrategy[Any]] = {
    "quantity": HEXES | JSON,
    "header": near(BLOCK) | JSON,
    "block": near({**BLOCK, "transactions": [TX]}, transactions=st.lists(near(TX) | JSON)),
    "logs": LOGS | JSON,
    "receipt": near(RECEIPT, logs=LOGS) | JSON,
    "transaction": near(TX) | JSON,
}


class ShapeNode:
    """Answers every item of a request with ``value``: as its ``result``, as its ``error``, or
    (``envelope``) ``value`` is the whole answer."""

    def __init__(self) -> None:
        self.mode, self.value = "result", None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "envelope":
            return httpx.Response(200, content=_dump(self.value))
        body = orjson.loads(request.content)
        items = body if isinstance(body, list) else [body]
        out = [
            b'{"jsonrpc":"2.0","id":%d,"%s":%s}' % (i["id"], self.mode.encode(), _dump(self.value))
            for i in items
        ]
        content = b"[" + b",".join(out) + b"]" if isinstance(body, list) else out[0]
        return httpx.Response(200, content=content)


def _dump(value: Any) -> bytes:
    return value.text if isinstance(value, Raw) else json.dumps(value).encode()


class _AnyTime(Mapping[int, int]):
    """Block times for any block (so decoding goes as far as the log lets it)."""

    def __getitem__(self, key: int) -> int:
        return 100

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


class _Everyone:
    def __contains__(self, item: object) -> bool:
        return True


def _use_logs(found: list[Any]) -> None:
    """What the scan does with a range's logs: decode (both paths), group by block, link."""
    decode_transfer_logs(found, {TOKEN}, _AnyTime())
    decode_transfer_logs(found, {TOKEN}, _AnyTime(), recipients={"0x" + "22" * 20})
    recipients_of(found)
    log_blocks(found)
    logs_agree(found, [Header(7, HASH, HASH, 100)], complete=False)


ROW = Awaiting(
    payment_key="p",
    tx_hash=HASH,
    log_index=0,
    block_number=7,
    block_hash=HASH,
    to_address="0x" + "22" * 20,
    token=TOKEN,
    value=5,
    failed_before=False,
)
Read = Callable[[ChainReader], Any]
READS: dict[str, tuple[str, Read, Callable[[Any], object]]] = {
    "chain_id": ("quantity", lambda r: r.chain_id(), lambda v: None),
    "head": ("quantity", lambda r: r.head(), lambda v: None),
    "decimals": ("quantity", lambda r: r.token_decimals(TOKEN), lambda v: None),
    "latest_header": ("header", lambda r: r.latest_header(), lambda v: None),
    "tag_block": ("header", lambda r: r.tag_block("finalized"), lambda v: None),
    "headers": ("header", lambda r: r.headers(7, 8), lambda v: None),
    "headers_at": ("header", lambda r: r.headers_at([7]), lambda v: None),
    "blocks": (
        "block",
        lambda r: r.blocks_with_transactions(7, 7),
        lambda v: native_transfers(v, _Everyone()),
    ),
    "logs": ("logs", lambda r: r.logs([TOKEN], TRANSFER_TOPIC, 7, 8), _use_logs),
    "sifted_logs": (
        "logs",
        lambda r: r.sifted_logs([TOKEN], TRANSFER_TOPIC, 7, 8, watched=frozenset({HOLDER})),
        lambda v: _use_logs(v[0]),
    ),
    "logs_by_hash": (
        "logs",
        lambda r: r.logs_by_block_hash([TOKEN], TRANSFER_TOPIC, HASH),
        _use_logs,
    ),
    "receipt_statuses": ("receipt", lambda r: r.receipt_statuses([HASH]), lambda v: None),
    "receipt": (
        "receipt",
        lambda r: r.receipt(HASH),
        lambda v: v is None or _log_problems(v.logs, ROW),
    ),
    "transaction": (
        "transaction",
        lambda r: r.transaction(HASH),
        lambda v: _native_problems(v, ROW),
    ),
}


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop:
        yield loop


@pytest.mark.parametrize("name", sorted(READS))
def test_any_answer_is_a_value_or_a_scanner_error(runner: asyncio.Runner, name: str) -> None:
    shape, read, use = READS[name]
    node = ShapeNode()

    async def open_reader() -> ChainReader:
        transport = httpx.MockTransport(node)
        client = RpcClient(
            "fake", ["http://node/v3/KEY"], max_attempts=2, backoff=FAST, transport=transport
        )
        return ChainReader(client)

    reader = runner.run(open_reader())

    @settings(derandomize=True, deadline=None, max_examples=50, database=None)
    @given(
        mode=st.sampled_from(["result", "result", "result", "error", "envelope"]),
        value=SHAPES[shape],
    )
    @example(mode="result", value=[1, "x", None])
    @example(mode="result", value=["a receipt"])
    @example(mode="result", value=[{k: v for k, v in LOG.items() if k != "blockNumber"}])
    @example(mode="result", value=Raw(DEEP))
    @example(mode="error", value=Raw(b'{"code":-32005,"message":"x","data":' + DEEP + b"}"))
    @example(mode="error", value=Raw(b'{"code":-32005,"message":"x","data":' + DEEPER + b"}"))
    @example(mode="error", value={"code": -32005, "message": "limited to a " + "9" * 5000})
    @example(mode="envelope", value=Raw(DEEP))
    @example(mode="envelope", value=[{"jsonrpc": "2.0", "id": [1], "result": "0x1"}])
    @example(mode="envelope", value=[{"jsonrpc": "2.0", "id": "²", "result": "0x1"}])
    def check(mode: str, value: Any) -> None:
        node.mode, node.value = mode, value
        try:
            found = runner.run(read(reader))
        except ScannerError:
            return
        with contextlib.suppress(ScannerError):
            use(found)

    try:
        check()
    finally:
        runner.run(reader.client.aclose())


def test_a_log_that_may_pay_a_watched_address_is_never_passed_over() -> None:
    """Logs the reader let through that the hot path's recipient filter would pass over are
    well-shaped Transfers to someone else; a log whose recipient cannot be read is decoded in
    full, and so an error, not a skip."""
    broken = {**LOG, "topics": [TRANSFER_TOPIC, HOLDER, "0x" + "00" * 12 + "zz" * 20]}
    with pytest.raises(ScannerError):
        decode_transfer_logs([broken], {TOKEN}, _AnyTime(), recipients={"0x" + "33" * 20})
    erc721 = {**LOG, "topics": [TRANSFER_TOPIC, HOLDER, HOLDER, HASH], "data": "0x"}
    result = decode_transfer_logs([erc721], {TOKEN}, _AnyTime())
    assert result.transfers == [] and result.skipped == {"topics": 1}


async def test_a_window_read_whole_never_passes_over_a_garbled_recipient() -> None:
    """The catch-up reads a token's logs whole for many addresses and keeps those that pay one:
    a recipient topic that is not hex (here over a watched address) is an error, not a skip."""
    watched = ["0x" + f"{i:040x}" for i in range(1, WHOLE_LOGS_ABOVE + 2)]
    garbled = {**LOG, "topics": [TRANSFER_TOPIC, HOLDER, "0xZZ" + "00" * 11 + watched[0][2:]]}
    fine = {**LOG, "topics": [TRANSFER_TOPIC, HOLDER, "0x" + "00" * 12 + watched[1][2:]]}

    def node(logs: list[Any]) -> Callable[[str, list[Any]], Any]:
        return lambda method, params: "0x100000" if method == "eth_blockNumber" else logs

    async with fake_reader(node([fine])) as reader:
        assert await token_logs(reader, TOKEN, watched, 1, 10, RangeSizer(10)) == [fine]
    async with fake_reader(node([garbled, fine])) as reader:
        with pytest.raises(MalformedResponse, match="log topic"):
            await token_logs(reader, TOKEN, watched, 1, 10, RangeSizer(10))
