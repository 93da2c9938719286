"""An empty ``eth_getLogs`` answer is not taken on a node's word where the kind says so (TRON).

java-tron answers ``eth_getLogs`` with fewer logs than exist: its bloom index misses some
(java-tron #4447, #6037), and a node restored from a snapshot lacks the section-bloom index
and answers ``[]`` to any address filter until it resyncs (#6384). The receipts still hold the
logs. So a live range's transactions to a watched token contract are checked: each one that
left no Transfer log in the answer has its block's receipts read (``eth_getBlockReceipts``,
or the transaction's receipt where the node answers ``null`` or lacks the method), and every
successful Transfer log of a watched token the receipts hold and the answer lacks is added to
the range: credited as any log, told (``logs_missed``) and counted
(``scanner_logs_missed_total``).

A transaction to the token that transferred nothing (an ``approve``, a failed call) costs one
receipts read of its block; a transfer made by another contract (an exchange's withdrawal) is
not a transaction *to* the token and is not cross-checked here (the sweep of final ranges
reads its logs again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import structlog

from scanner.chain.reader import ChainReader
from scanner.chain.shapes import Receipt
from scanner.core.decode import TRANSFER_TOPIC
from scanner.core.model import Log
from scanner.errors import RangeInconsistent, ReceiptNotAvailable
from scanner.observe.metrics import Metrics
from scanner.scan.context import ChainContext
from scanner.scan.fetch import RangeData

log = structlog.get_logger(__name__)


async def cross_check(
    reader: ChainReader, ctx: ChainContext, data: RangeData, metrics: Metrics | None
) -> RangeData:
    """``data`` with the Transfer logs its blocks' receipts show and its logs lack (none: the
    same ``data``). Only for a kind that asks (:attr:`ChainKind.cross_check_empty_logs`)."""
    if not ctx.kind.cross_check_empty_logs or not ctx.tokens or data.end < data.start:
        return data
    blocks = await reader.blocks_with_transactions(data.start, data.end)
    logged = {str(entry["transactionHash"]).lower() for entry in data.logs}
    suspects = _suspects(blocks, ctx.tokens, logged)
    if not suspects:
        return data
    hashes = {h.number: h.hash for h in data.headers}
    found = await _receipt_logs(reader, suspects, hashes)
    have = {(str(e["transactionHash"]).lower(), str(e["logIndex"])) for e in data.logs}
    missed = [
        entry
        for entry in found
        if _is_watched_transfer(entry, ctx.tokens)
        and (str(entry["transactionHash"]).lower(), str(entry["logIndex"])) not in have
    ]
    if not missed:
        return data
    _report(ctx, missed, data, metrics)
    logs = sorted((*data.logs, *missed), key=_order)
    return replace(data, logs=tuple(logs))


def _suspects(
    blocks: Iterable[Mapping[str, Any]], tokens: Mapping[str, object], logged: set[str]
) -> dict[int, list[str]]:
    """Block number → its transactions to a watched token that left no log in the answer."""
    out: dict[int, list[str]] = {}
    for block in blocks:
        number = int(str(block["number"]), 16)
        for tx in block["transactions"]:
            to = str(tx.get("to") or "").lower()
            tx_hash = str(tx["hash"]).lower()
            if to in tokens and tx_hash not in logged:
                out.setdefault(number, []).append(tx_hash)
    return out


async def _receipt_logs(
    reader: ChainReader, suspects: Mapping[int, Sequence[str]], hashes: Mapping[int, str]
) -> list[Log]:
    """The logs of the suspects' successful receipts (a block's receipts at once, else each
    transaction's); RangeInconsistent when a receipt names another block than the header."""
    out: list[Log] = []
    for number, txs in suspects.items():
        receipts = await reader.block_receipts(number)
        if receipts is None:
            receipts = [await _receipt(reader, tx) for tx in txs]
        for receipt in receipts:
            if receipt.block_hash != hashes.get(number, receipt.block_hash):
                raise RangeInconsistent(
                    f"{reader.chain}: block {number}'s receipts name block {receipt.block_hash},"
                    f" its header {hashes[number]}"
                )
            if receipt.status == 1:  # java-tron TransactionReceipt: 0x1 = DEFAULT/SUCCESS
                out.extend(receipt.logs)
    return out


async def _receipt(reader: ChainReader, tx_hash: str) -> Receipt:
    found = await reader.receipt(tx_hash)
    if found is None:  # the block is there, its receipt not yet: ask again
        raise ReceiptNotAvailable(
            f"{reader.chain}: the node has no receipt for {tx_hash} (yet)",
            chain=reader.chain,
            method="eth_getTransactionReceipt",
        )
    return found


def _is_watched_transfer(entry: Log, tokens: Mapping[str, object]) -> bool:
    topics = entry["topics"]
    return (
        str(entry["address"]).lower() in tokens
        and bool(topics)
        and str(topics[0]).lower() == TRANSFER_TOPIC
    )


def _order(entry: Log) -> tuple[int, int]:
    return int(entry["blockNumber"], 16), int(entry["logIndex"], 16)


def _report(
    ctx: ChainContext, missed: Sequence[Log], data: RangeData, metrics: Metrics | None
) -> None:
    """One ``logs_missed`` warning per log the answer lacked, and the count."""
    for entry in missed:
        log.warning(
            "logs_missed",
            chain=ctx.name,
            source="receipts",
            tx_hash=entry["transactionHash"],
            log_index=int(entry["logIndex"], 16),
            block_number=int(entry["blockNumber"], 16),
            token=ctx.kind.show(str(entry["address"]).lower()),
            from_block=data.start,
            to_block=data.end,
        )
    if metrics is not None:
        metrics.logs_missed.labels(ctx.name).inc(len(missed))
