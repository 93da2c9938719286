"""A TRON backfill against the java-tron simulator, beside the raw ``eth_getLogs`` read of the
same blocks on the same node.

    .venv/bin/python -m bench.tron [--blocks 12000] [--per-block 20] [--match 0.01]
                                   [--backend sqlite|postgresql]

One simulated java-tron node (:mod:`scanner.devchain.tron`) with ``--blocks`` blocks of one
transaction each, paying ``--per-block`` USDT transfers to 200 recipients in turn. The raw read
asks ``eth_getLogs`` for the token's Transfer logs in 5,000-block ranges (java-tron's limit),
4 at once, parsed with orjson. The scanner's ``Backfill`` (product defaults; USDT configured in
base58, payments written to base58 addresses for ``--match`` of the recipients, each a deposit
for the sum of what it receives) runs over the same blocks on a fresh database. Figures are
printed, never judged.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import httpx
import orjson

from bench.common import configure_bench_logging
from bench.database import fresh_database, insert_token_row, workdir
from scanner.chain.reader import ChainReader
from scanner.config import ChainSettings
from scanner.core.tron_address import to_base58
from scanner.devchain.tron import TRANSFER_TOPIC, TronNode
from scanner.devchain.tron_demo import USDT, USDT_HEX
from scanner.scan.backfill import Backfill
from scanner.scan.parts import ChainParts
from scanner.testkit.gateway import NewPayment, insert_payments
from scanner.testkit.postgres import PG_ADMIN_URL

RECIPIENTS = 200
SPAN = 5_000  # java-tron's eth_getLogs range limit (LogFilterWrapper)
RESULTS = 10_000  # and its result limit (LogBlockQuery.MAX_RESULT)


def recipient(n: int) -> str:
    return "0x" + f"{n + 1:040x}"


async def raw_read(url: str, first: int, last: int, per_block: int) -> tuple[int, float]:
    """(logs, seconds): the token's Transfer logs in the widest ranges the node answers
    (5,000 blocks, at most 10,000 logs), 4 at once."""
    span = min(SPAN, RESULTS // per_block)
    spans = [(a, min(a + span - 1, last)) for a in range(first, last + 1, span)]
    gate = asyncio.Semaphore(4)
    async with httpx.AsyncClient(timeout=120) as client:

        async def one(a: int, b: int) -> int:
            flt = {
                "fromBlock": hex(a),
                "toBlock": hex(b),
                "address": [USDT_HEX],
                "topics": [TRANSFER_TOPIC],
            }
            body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [flt]}
            async with gate:
                answer = await client.post(url, content=orjson.dumps(body))
            return len(orjson.loads(answer.content)["result"])

        started = time.perf_counter()
        counts = await asyncio.gather(*(one(a, b) for a, b in spans))
    return sum(counts), time.perf_counter() - started


async def backfill(url: str, first: int, last: int, since: int, args: argparse.Namespace) -> str:
    db = await fresh_database(args.backend, workdir(), args.pg_url)
    chain = ChainSettings.model_validate(  # the product's defaults
        {
            "name": "tron",
            "kind": "tron",
            "chain_id": 728126428,
            "rpc_urls": [url],
            "tokens": [{"symbol": "USDT", "address": USDT, "decimals": 6}],
        }
    )
    try:
        token_id = await insert_token_row(db, USDT, 6, chain="tron")
        watched = [recipient(n) for n in range(0, RECIPIENTS, max(1, round(1 / args.match)))]
        rows = [
            NewPayment(
                uuid.uuid4(), token_id, "tron", to_base58(a), "1000000", since + 10**7, since
            )
            for a in watched
        ]
        async with db.engine.begin() as conn:
            await insert_payments(conn, rows)
        reader = ChainReader.from_settings(chain, None)
        started = time.perf_counter()
        try:
            summary = await Backfill(ChainParts(chain, reader, db.sessions)).run(first, last)
        finally:
            await reader.client.aclose()
        seconds = time.perf_counter() - started
        counts = await db.counts()
    finally:
        await db.close()
    blocks = summary.to_block - summary.from_block + 1
    credited = counts["transactions"]
    return f"{seconds:.2f} s, {blocks} blocks, {credited} transfers to {len(watched)} payments"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=12_000)
    parser.add_argument("--per-block", type=int, default=20)
    parser.add_argument("--match", type=float, default=0.01)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default=PG_ADMIN_URL)
    args = parser.parse_args(argv)
    configure_bench_logging("warning", None)
    node = TronNode.start(blocks=1, genesis_time=int(time.time()) - 10**6, ready_timeout=60.0)
    assert isinstance(node, TronNode)
    with node:
        node.token(USDT_HEX, 6)
        spec = {
            "token": USDT_HEX,
            "blocks": args.blocks,
            "perBlock": args.per_block,
            "recipients": [recipient(n) for n in range(RECIPIENTS)],
        }
        built = time.perf_counter()
        last = int(node.rpc("sim_bulk", [spec]), 16)
        node.mine(20)  # solidified above the last bulk block
        first, took = 2, time.perf_counter() - built
        since = int(node.rpc("eth_getBlockByNumber", [hex(first - 1), False])["timestamp"], 16)
        print(f"chain: {last - first + 1} blocks x {args.per_block} logs, built in {took:.1f} s")
        logs, seconds = asyncio.run(raw_read(node.url, first, last, args.per_block))
        print(f"raw eth_getLogs (widest ranges, 4 at once): {logs} logs, {seconds:.2f} s")
        outcome = asyncio.run(backfill(node.url, first, last, since, args))
        print(f"scanner backfill ({args.backend}, match {args.match}): {outcome}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
