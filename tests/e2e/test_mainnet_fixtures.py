"""Decoding real Ethereum mainnet logs (blocks 17173049–17173050, exported by ethereum-etl; see
tests/fixtures/mainnet/README.md), compared with ethereum-etl's own ``token_transfers``.

The logs are turned back into what a node answers (camelCase keys, ``0x``-hex quantities) and
decoded directly, then served by a tiny JSON-RPC stub to the real scanner over both databases."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from eth_utils.address import to_checksum_address
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.chain.reader import ChainReader
from scanner.core.amounts import to_amount
from scanner.core.decode import TRANSFER_TOPIC, decode_transfer_logs
from scanner.db import cursor as stored
from scanner.observe.metrics import Metrics
from scanner.scan.live import ChainScanner
from scanner.scan.parts import ChainParts
from scanner.testkit.gateway import NewPayment, db_id, insert_payments, token_row_id
from scanner.testkit.settings import chain_settings
from tests.support.metrics import sample

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mainnet"
USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
POISON = "0xeebc1b0e0f19bd03502ada32cb7a9e217568dceb"  # mints zero-value transfers
FIRST, LAST = 17173049, 17173050
CHAIN = "ethereum"


def _jsonl(name: str) -> list[dict[str, Any]]:
    with (FIXTURES / name).open() as f:
        return [json.loads(line) for line in f if line.strip()]


BLOCKS = {b["number"]: b for b in _jsonl("blocks.jsonl")}
ETL_LOGS = _jsonl("logs.jsonl")
ETL_TRANSFERS = _jsonl("token_transfers.jsonl")
TRANSFER_LOGS = [entry for entry in ETL_LOGS if entry["topics"][:1] == [TRANSFER_TOPIC]]
FOUR_TOPIC = [entry for entry in TRANSFER_LOGS if len(entry["topics"]) == 4]
NFT_CONTRACTS = sorted({entry["address"] for entry in FOUR_TOPIC})


def rpc_log(entry: dict[str, Any]) -> dict[str, Any]:
    """An ethereum-etl log as ``eth_getLogs`` returns it."""
    return {
        "address": entry["address"],
        "topics": entry["topics"],
        "data": entry["data"],
        "blockNumber": hex(entry["block_number"]),
        "blockHash": entry["block_hash"],
        "transactionHash": entry["transaction_hash"],
        "transactionIndex": hex(entry["transaction_index"]),
        "logIndex": hex(entry["log_index"]),
        "removed": False,
    }


def rpc_block(block: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": hex(block["number"]),
        "hash": block["hash"],
        "parentHash": block["parent_hash"],
        "timestamp": hex(block["timestamp"]),
        "transactions": [],
    }


def etl_transfers_of(token: str) -> list[dict[str, Any]]:
    return [t for t in ETL_TRANSFERS if t["token_address"] == token]


TIMESTAMPS = {n: b["timestamp"] for n, b in BLOCKS.items()}
#: what the scanner watches: the two stablecoins, a contract that emits zero-value transfers
#: and the ERC-721 contracts (configured as tokens so that their logs reach the decoder)
TOKENS = [
    ("USDT", USDT, 6),
    ("USDC", USDC, 6),
    ("POISON", POISON, 18),
    *((f"NFT{i}", address, 0) for i, address in enumerate(NFT_CONTRACTS)),
]


# -- decoding alone ------------------------------------------------------------------------------


def test_fixture_is_what_the_tests_expect() -> None:
    assert sorted(BLOCKS) == [FIRST, LAST]
    assert BLOCKS[LAST]["parent_hash"] == BLOCKS[FIRST]["hash"]
    assert len(TRANSFER_LOGS) == len(ETL_TRANSFERS) == 291
    assert len(FOUR_TOPIC) == 9
    assert (FIXTURES / "LICENSE-ethereum-etl").is_file()


@pytest.mark.parametrize(("token", "count"), [(USDT, 41), (USDC, 9)])
def test_usdt_and_usdc_decode_to_ethereum_etls_amounts(token: str, count: int) -> None:
    decoded = decode_transfer_logs([rpc_log(e) for e in TRANSFER_LOGS], {token}, TIMESTAMPS)
    expected = etl_transfers_of(token)
    assert len(decoded.transfers) == len(expected) == count
    assert decoded.skipped == {"unknown_token": len(TRANSFER_LOGS) - count}
    got = {
        (t.tx_hash, t.log_index): (t.block_number, t.from_address, t.to_address, t.value)
        for t in decoded.transfers
    }
    want = {
        (e["transaction_hash"], e["log_index"]): (
            e["block_number"],
            e["from_address"],
            e["to_address"],
            e["value"],
        )
        for e in expected
    }
    assert got == want
    for transfer in decoded.transfers:
        assert transfer.token == token
        assert transfer.block_timestamp == TIMESTAMPS[transfer.block_number]
        assert to_amount(transfer.value, 6) == Decimal(transfer.value) / Decimal(10**6)


def test_known_amounts_are_exact() -> None:
    decoded = decode_transfer_logs([rpc_log(e) for e in TRANSFER_LOGS], {USDT, USDC}, TIMESTAMPS)
    amounts = {(t.token, t.to_address): to_amount(t.value, 6) for t in decoded.transfers}
    assert amounts[(USDT, "0x3a3bbaf78361a8510cc2a4c1776d501011f677d9")] == Decimal("600321.88")
    assert amounts[(USDT, "0xfd6c2d2499b1331101726a8ac68ccc9da3fab54f")] == Decimal("108714.272823")
    assert amounts[(USDC, "0x3416cf6c708da44db2624d63ea0aaef7113527c6")] == Decimal("111000")
    assert amounts[(USDC, "0x3fba61540568e514a78a05a112c583bb40089168")] == Decimal("220.832943")


def test_every_erc20_shaped_log_decodes_and_the_erc721_ones_are_skipped() -> None:
    every_contract = {entry["address"] for entry in TRANSFER_LOGS}
    decoded = decode_transfer_logs([rpc_log(e) for e in TRANSFER_LOGS], every_contract, TIMESTAMPS)
    four_topic_keys = {(e["transaction_hash"], e["log_index"]) for e in FOUR_TOPIC}
    zero = [t for t in ETL_TRANSFERS if t["value"] == 0]
    assert zero and all(t["token_address"] == POISON for t in zero)
    assert decoded.skipped == {"topics": 9, "zero_value": len(zero)}
    expected = {
        (e["transaction_hash"], e["log_index"]): (e["token_address"], e["to_address"], e["value"])
        for e in ETL_TRANSFERS
        if (e["transaction_hash"], e["log_index"]) not in four_topic_keys and e["value"] != 0
    }
    got = {(t.tx_hash, t.log_index): (t.token, t.to_address, t.value) for t in decoded.transfers}
    assert got == expected
    assert len(got) == 291 - 9 - len(zero)


# -- the real scanner over a JSON-RPC stub ------------------------------------------------------


class MainnetStub:
    """Answers what the scanner asks of a node, from the two fixture blocks only."""

    def __init__(self) -> None:
        self.logs = [rpc_log(e) for e in ETL_LOGS]
        self.by_number = {n: rpc_block(b) for n, b in BLOCKS.items()}
        self.by_hash = {b["hash"]: n for n, b in BLOCKS.items()}
        self.calls: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if isinstance(body, list):
            return web.json_response([self.answer(item) for item in body])
        return web.json_response(self.answer(body))

    def answer(self, item: dict[str, Any]) -> dict[str, Any]:
        method, params = item["method"], item.get("params", [])
        self.calls.append(method)
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": item["id"]}
        if method == "eth_chainId":
            return reply | {"result": "0x1"}
        if method == "eth_blockNumber":
            return reply | {"result": hex(LAST)}
        if method == "eth_getBlockByNumber":
            tag = params[0]
            number = LAST if tag in ("latest", "finalized", "safe") else int(tag, 16)
            return reply | {"result": self.by_number.get(number)}
        if method == "eth_getLogs":
            return reply | {"result": self.get_logs(params[0])}
        if method == "eth_call" and params[0].get("data") == "0x313ce567":  # decimals()
            decimals = {address: d for _, address, d in TOKENS}.get(params[0]["to"].lower())
            if decimals is not None:
                return reply | {"result": "0x" + format(decimals, "064x")}
        return reply | {"error": {"code": -32601, "message": f"{method} not served"}}

    def get_logs(self, flt: dict[str, Any]) -> list[dict[str, Any]]:
        if "blockHash" in flt:
            number = self.by_hash.get(flt["blockHash"])
            low = high = -1 if number is None else number
        else:
            low, high = int(flt["fromBlock"], 16), int(flt["toBlock"], 16)
        addresses = flt.get("address")
        if isinstance(addresses, str):
            addresses = [addresses]
        topics = flt.get("topics") or []
        return [
            log
            for log in self.logs
            if low <= int(log["blockNumber"], 16) <= high
            and (addresses is None or log["address"] in addresses)
            and all(_topic_matches(log["topics"], i, want) for i, want in enumerate(topics))
        ]


def _topic_matches(topics: list[str], index: int, want: str | list[str] | None) -> bool:
    if want is None:
        return True
    if index >= len(topics):
        return False
    return topics[index] in (want if isinstance(want, list) else [want])


@pytest.fixture
async def stub_url() -> AsyncIterator[str]:
    stub = MainnetStub()
    app = web.Application()
    app.router.add_post("/", stub.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


class Gateway:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, token: str, address: str, amount: str, created_at: int) -> str:
        payment_id = str(uuid.uuid4())
        async with self.engine.begin() as conn:
            token_id = await token_row_id(conn, CHAIN, token)
            # looked at already (the stub holds two blocks: no look-back below them)
            payment = NewPayment(
                payment_id,
                token_id,
                CHAIN,
                address,
                amount,
                created_at + 3600,
                created_at,
                seen_at_block=FIRST - 1,
            )
            await insert_payments(conn, [payment])
        return payment_id

    async def payment(self, payment_id: str) -> tuple[str, Decimal, int]:
        async with self.engine.connect() as conn:
            status, received, confirmations = (
                await conn.execute(
                    text(
                        "SELECT status, amount_received, confirmations FROM payments WHERE id = :id"
                    ),
                    {"id": db_id(self.engine, payment_id)},
                )
            ).one()
        return status, Decimal(str(received)), confirmations

    async def credits(self, payment_id: str) -> list[tuple[int, int, int]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT block_number, log_index, value FROM transactions"
                    " WHERE payment_id = :id ORDER BY block_number, log_index"
                ),
                {"id": db_id(self.engine, payment_id)},
            )
            return [(int(b), int(i), int(v)) for b, i, v in rows]


async def test_scanner_credits_real_mainnet_transfers(
    stub_url: str,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    settings = chain_settings(
        stub_url, TOKENS, name=CHAIN, chain_id=1, confirmations=2, start_block=FIRST
    )
    async with session_factory() as session, session.begin():  # the scan starts at FIRST
        await stored.init_cursor(session, CHAIN, FIRST - 1, BLOCKS[FIRST]["parent_hash"])
    metrics = Metrics()
    reader = ChainReader.from_settings(settings, metrics)
    scanner = ChainScanner(ChainParts(settings, reader, session_factory, metrics=metrics))
    await scanner.prepare()
    gateway = Gateway(engine)
    created = BLOCKS[FIRST]["timestamp"] - 60
    pair = "0x0d4a11d5eeaac28ec3f61d100daf4d40471f1852"  # four USDT transfers, both blocks
    usdc_to = to_checksum_address("0x3416cf6c708da44db2624d63ea0aaef7113527c6")
    busy = "0xa9d1e08c7793af67e9d92fe308d5697fb81d3e43"  # 399.86115, 4000, 399.861497 USDT
    nobody = "0x" + "ee" * 20
    pair_pid = await gateway.create(USDT, pair, "1500", created)
    usdc_pid = await gateway.create(USDC, usdc_to, "111000", created)
    busy_old = await gateway.create(USDT, busy, "4000", created)
    busy_new = await gateway.create(USDT, busy, "399.861497", created + 1)
    idle = await gateway.create(USDT, nobody, "1", created)
    try:
        await scanner.scan_until_head()
    finally:
        await scanner.reader.client.aclose()
    assert scanner.cursor == LAST
    assert await gateway.payment(pair_pid) == ("confirming", Decimal("1500"), 1)
    assert await gateway.credits(pair_pid) == [
        (FIRST, 161, 300_000_000),
        (FIRST, 261, 500_000_000),
        (LAST, 1, 200_000_000),
        (LAST, 8, 500_000_000),
    ]
    assert await gateway.payment(usdc_pid) == ("confirming", Decimal("111000"), 1)
    assert await gateway.credits(usdc_pid) == [(LAST, 323, 111_000_000_000)]
    # no exact match: the oldest pending takes 399.86115 and then 4000 (overpaid, never split);
    # the last transfer is exactly what the newer one is waiting for
    assert await gateway.payment(busy_old) == ("confirming", Decimal("4399.86115"), 1)
    assert await gateway.credits(busy_old) == [(LAST, 231, 399_861_150), (LAST, 233, 4_000_000_000)]
    assert await gateway.payment(busy_new) == ("confirming", Decimal("399.861497"), 1)
    assert await gateway.payment(idle) == ("pending", Decimal("0"), 0)

    zero = sum(1 for t in ETL_TRANSFERS if t["value"] == 0)
    skipped = "scanner_skipped_logs_total"
    assert sample(metrics, skipped, chain=CHAIN, reason="topics") == 9
    assert sample(metrics, skipped, chain=CHAIN, reason="zero_value") == zero
    assert sample(metrics, "scanner_transfers_matched_total", chain=CHAIN) == 8
