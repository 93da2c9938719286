"""Typed reads of what the scanner needs from a node: heads, headers, logs, blocks, receipts.

Every result is parsed here, at the edge, into typed values (:mod:`scanner.chain.shapes`): a
header's number, hashes and timestamp, a log's shape, a receipt, a transaction. An answer of the
wrong shape is a :class:`~scanner.errors.MalformedResponse`, whatever it is; nothing above
``chain/`` meets a node's JSON unchecked. No web3 formatters on the hot path (they cost ~80 µs a
log; orjson's dicts, shape-checked, cost ~7). A block or receipt the node cannot show (``null``)
is never skipped: it raises the transient :class:`~scanner.errors.BlockNotAvailable`, which the
client retries, and which the scan layer treats as "wait", never as "nothing there".

One rule tells "not yet" from "never": a block still unavailable after the retries that lies more
than ``recent`` blocks (the chain's reorg window) below the node's own head is one the node cannot
show (a pruned node, one started from a snapshot, expired history): every block read raises
:class:`~scanner.errors.HistoryUnavailable` for it, and ``eth_getLogs`` too when its range's first
block is such a block. Near or above the head it stays "not yet" (a lagging replica).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Collection, Container, Sequence
from typing import Any, TypeVar, cast

from scanner.chain import shapes
from scanner.chain.retrying import RpcObserver
from scanner.chain.rpc import RpcClient
from scanner.chain.shapes import Fail, Receipt, Transaction
from scanner.config import ChainSettings
from scanner.core.model import Header, Log, PassedOver
from scanner.errors import (
    BlockNotAvailable,
    HistoryUnavailable,
    MalformedResponse,
    ReceiptNotAvailable,
    RpcResponseError,
)

DECIMALS_SELECTOR = "0x313ce567"  # keccak256("decimals()")[:4]
RECENT_BLOCKS = 128  # below the head, how far a missing block may be one not there *yet*
T = TypeVar("T")
DEFAULT_BATCH = 100  # requests in one JSON-RPC batch (a kind may allow fewer)
#: The recipient topics a whole answer is sifted by; or a task still reading them (a large
#: book's, while the first reads go out), whose None means none: every log is kept.
Sieve = Container[str] | asyncio.Future[frozenset[str] | None]
METHOD_NOT_FOUND = -32601  # JSON-RPC 2.0: the node does not serve the method
WHY_SHOWN = 160  # characters of a malformed answer's description shown (its picture last)


class ChainReader:
    """The node's view of one chain, through an :class:`RpcClient`."""

    def __init__(self, client: RpcClient, *, recent: int = RECENT_BLOCKS) -> None:
        self.client = client
        self.chain = client.chain
        self.recent = recent  # the chain's reorg window: a block missing below it is gone

    @classmethod
    def from_settings(cls, chain: ChainSettings, observer: RpcObserver | None) -> ChainReader:
        """A chain's reader over its ``rpc_urls``, as its settings shape the client."""
        client = RpcClient(
            chain.name,
            [u.get_secret_value() for u in chain.rpc_urls],
            timeout=chain.rpc_timeout,
            max_response_bytes=chain.rpc_max_response_bytes,
            max_attempts=chain.rpc_max_attempts,
            observer=observer,
            batch_size=chain.kind_rules.max_batch or DEFAULT_BATCH,
            max_rps=chain.rpc_max_rps,
            headers=chain.headers(),
        )
        return cls(client, recent=chain.reorg_depth)

    def __repr__(self) -> str:
        return f"ChainReader({self.client!r})"

    # -- numbers ---------------------------------------------------------------------------

    async def chain_id(self) -> int:
        """``eth_chainId``: compared with the configuration at start."""
        return await self.client.call("eth_chainId", [], parse=self._quantity("eth_chainId"))

    async def head(self) -> int:
        """``eth_blockNumber``: the newest block the node (this replica) has."""
        return await self.client.call(
            "eth_blockNumber", [], parse=self._quantity("eth_blockNumber")
        )

    async def latest_header(self) -> Header:
        """The node's newest block header (``eth_getBlockByNumber("latest")``): the head's
        number and its timestamp in one call, for telling a stalled node."""

        def parse(block: Any) -> Header:
            return self._header(block, "latest")

        return await self.client.call("eth_getBlockByNumber", ["latest", False], parse=parse)

    async def tag_block(self, tag: str) -> int:
        """The number of the ``finalized`` / ``safe`` (or ``latest``) block."""

        def parse(block: Any) -> int:
            return self._header(block, tag).number

        return await self.client.call("eth_getBlockByNumber", [tag, False], parse=parse)

    async def token_decimals(self, token: str) -> int:
        """``decimals()`` of an ERC-20 contract (``eth_call`` at the latest block)."""

        def parse(value: Any) -> int:
            return int(shapes.fixed_hex(value, self._fail("eth_call"), "decimals()", 66), 16)

        call = {"to": token, "data": DECIMALS_SELECTOR}
        return await self.client.call("eth_call", [call, "latest"], parse=parse)

    async def has_code(self, address: str) -> bool:
        """Whether a contract lives at ``address`` (``eth_getCode`` at the latest block)."""

        def parse(value: Any) -> bool:
            if not isinstance(value, str) or not value.startswith("0x"):
                raise self._fail("eth_getCode")(f"expected a hex string, got {shapes.peek(value)}")
            return len(value) > 2

        return await self.client.call("eth_getCode", [address, "latest"], parse=parse)

    # -- blocks ----------------------------------------------------------------------------

    async def headers(self, start: int, end: int) -> list[Header]:
        """Headers of ``start..end`` (inclusive), in order; batched ``eth_getBlockByNumber``."""
        calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(start, end + 1)]

        def parse(index: int, block: Any) -> Header:
            return self._header(block, start + index)

        return await self._blocks(calls, parse)

    async def headers_at(self, numbers: Sequence[int]) -> list[Header]:
        """Headers of the blocks ``numbers`` (any set, ascending in the answer); one batch."""
        wanted = sorted(set(numbers))
        calls = [("eth_getBlockByNumber", [hex(n), False]) for n in wanted]

        def parse(index: int, block: Any) -> Header:
            return self._header(block, wanted[index])

        return await self._blocks(calls, parse) if calls else []

    async def hashes_at(self, numbers: Collection[int]) -> dict[int, str]:
        """The hashes the node shows now for the blocks ``numbers`` (:meth:`headers_at`)."""
        return {h.number: h.hash for h in await self.headers_at(list(numbers))}

    async def blocks_with_transactions(self, start: int, end: int) -> list[dict[str, Any]]:
        """Full blocks of ``start..end`` (transactions as objects, shape-checked), in order."""
        calls = [("eth_getBlockByNumber", [hex(n), True]) for n in range(start, end + 1)]

        def parse(index: int, block: Any) -> dict[str, Any]:
            expected = start + index
            self._header(block, expected)
            return shapes.full_block(block, expected, self._fail("eth_getBlockByNumber"))

        return await self._blocks(calls, parse)

    async def _blocks(
        self, calls: Sequence[tuple[str, Sequence[Any]]], parse: Callable[[int, Any], T]
    ) -> list[T]:
        """A batch of block reads; a block that stays unavailable far below the head is
        HistoryUnavailable (see the module docstring)."""
        try:
            return await self.client.batch(calls, parse=parse)
        except BlockNotAvailable as exc:
            judged = await self._judged(exc)
            if judged is exc:
                raise
            raise judged from exc

    async def _judged(self, exc: BlockNotAvailable) -> BlockNotAvailable:
        """``exc``, or HistoryUnavailable when its block lies more than ``recent`` blocks below
        the node's head."""
        block = exc.block
        if isinstance(exc, HistoryUnavailable) or not isinstance(block, int):
            return exc
        head = await self.head()
        if head - block <= self.recent:
            return exc  # not there yet: a lagging replica
        return HistoryUnavailable(
            f"{self.chain}: the node cannot show block {block}, {head - block} blocks below its"
            " head (pruned, started from a snapshot, or its history expired)",
            chain=self.chain,
            method=exc.method,
            block=block,
            head=head,
        )

    # -- logs ------------------------------------------------------------------------------

    async def logs(
        self,
        addresses: Sequence[str],
        topic0: str,
        start: int,
        end: int,
        *,
        to_topics: Sequence[str] | None = None,
    ) -> list[Log]:
        """``eth_getLogs`` of ``addresses`` with ``topic0`` in ``start..end``, shape-checked.

        ``to_topics`` filters the third topic (a Transfer's recipient, 32-byte padded). An empty
        ``addresses`` returns ``[]`` without asking: to a node, no address means *every* contract.
        RangeTooLarge passes through untouched: the scan layer shrinks the range.

        A replica behind a load balancer that lacks some of the blocks answers by number with
        the logs it has (``[]`` above its head), as if that were all. So the query goes in one
        HTTP request (one replica) with ``eth_blockNumber``: an answer from a node whose head is
        below ``end`` is not taken (BlockNotAvailable, retried, never "nothing there").
        """
        if not addresses:
            return []
        return await self._get_logs(addresses, topic0, start, end, to_topics, self._log_list)

    async def sifted_logs(
        self,
        addresses: Sequence[str],
        topic0: str,
        start: int,
        end: int,
        *,
        watched: Sieve,
        to_topics: Sequence[str] | None = None,
    ) -> tuple[list[Log], PassedOver]:
        """:meth:`logs`, the answer sifted as it is parsed (:func:`~scanner.chain.shapes.sifted`):
        the logs that may pay one of the ``watched`` recipient topics, or that must be decoded
        to be counted or refused, and what is kept of the others. ``watched`` still being read
        (a task): the query goes out at once, and its answer waits for it before it is parsed
        (off the attempt's deadline)."""
        if not addresses:
            return [], PassedOver()
        fail = self._fail("eth_getLogs")
        ready: Callable[[], Awaitable[object]] | None = None
        if isinstance(watched, asyncio.Future):
            later = watched
            ready = functools.partial(asyncio.shield, later)  # a read's cancel leaves it be

            def parse(value: Any) -> tuple[list[Log], PassedOver]:
                topics = later.result()
                if topics is None:
                    return shapes.logs(shapes.plain(value), fail), PassedOver()
                return shapes.sifted(value, fail, topics)

        else:
            sieve = watched

            def parse(value: Any) -> tuple[list[Log], PassedOver]:
                return shapes.sifted(value, fail, sieve)

        return await self._get_logs(
            addresses, topic0, start, end, to_topics, parse, typed=shapes.typed_answers, ready=ready
        )

    async def _get_logs(
        self,
        addresses: Sequence[str],
        topic0: str,
        start: int,
        end: int,
        to_topics: Sequence[str] | None,
        parse_logs: Callable[[Any], T],
        typed: Callable[[bytes | bytearray], Any] | None = None,
        ready: Callable[[], Awaitable[object]] | None = None,
    ) -> T:
        """One ``eth_getLogs`` beside ``eth_blockNumber`` (:meth:`logs`), parsed by
        ``parse_logs``."""
        flt = {"fromBlock": hex(start), "toBlock": hex(end), "address": list(addresses)}
        flt["topics"] = _topics(topic0, to_topics)
        calls = [("eth_getLogs", [flt]), ("eth_blockNumber", [])]

        def parse(index: int, value: Any) -> Any:
            return parse_logs(value) if index == 0 else self._covers(value, end)

        try:
            logs, _ = await self.client.batch(
                calls, parse=parse, label="eth_getLogs", typed=typed, ready=ready
            )
        except HistoryUnavailable:
            raise
        except BlockNotAvailable:
            # "header not found": HistoryUnavailable when the range's first block is one the node
            # cannot show; else (a block near the head missing) not yet, as it was
            await self.headers(start, start)
            raise
        return cast(T, logs)

    async def logs_by_block_hash(
        self, addresses: Sequence[str], topic0: str, block_hash: str
    ) -> list[Log]:
        """``eth_getLogs`` of one block by hash (EIP-234): a node that does not know the block
        fails (BlockNotAvailable) instead of answering an empty list."""
        if not addresses:
            return []
        flt = {"blockHash": block_hash, "address": list(addresses), "topics": [topic0]}
        return await self.client.call("eth_getLogs", [flt], parse=self._log_list)

    # -- receipts --------------------------------------------------------------------------

    async def receipt_statuses(self, tx_hashes: Sequence[str]) -> dict[str, int]:
        """``{tx_hash: status}`` (1 success, 0 failure), hashes lower-case; batched receipts."""
        calls = [("eth_getTransactionReceipt", [h]) for h in tx_hashes]

        def parse(index: int, receipt: Any) -> int:
            return self._status(receipt, tx_hashes[index])

        statuses = await self.client.batch(calls, parse=parse)
        return {h.lower(): s for h, s in zip(tx_hashes, statuses, strict=True)}

    async def receipt(self, tx_hash: str) -> Receipt | None:
        """A transaction's receipt, or None when the node answers ``null`` (the verifier tells
        "not yet" from "no such transaction" by the node's head)."""
        fail = self._fail("eth_getTransactionReceipt")
        return await self.client.call(
            "eth_getTransactionReceipt", [tx_hash], parse=lambda v: shapes.receipt(v, fail)
        )

    async def block_receipts(self, number: int) -> list[Receipt] | None:
        """The receipts of block ``number`` (``eth_getBlockReceipts``, in transaction order);
        None when the node answers ``null`` (java-tron: a block it does not have, and block 0,
        ``TronJsonRpcImpl.getBlockReceipts``) or lacks the method (``-32601``): the caller
        asks per transaction instead."""
        fail = self._fail("eth_getBlockReceipts")

        def parse(value: Any) -> list[Receipt] | None:
            if value is None:
                return None
            if type(value) is not list:
                raise fail(f"block {number}: receipts are not a list: {shapes.peek(value)}")
            found = [shapes.receipt(v, fail) for v in value]
            return [r for r in found if r is not None]

        try:
            return await self.client.call("eth_getBlockReceipts", [hex(number)], parse=parse)
        except RpcResponseError as exc:
            if exc.code == METHOD_NOT_FOUND:
                return None
            raise

    async def transaction(self, tx_hash: str) -> Transaction | None:
        """A transaction's recipient and value, or None when the node answers ``null``."""
        fail = self._fail("eth_getTransactionByHash")
        return await self.client.call(
            "eth_getTransactionByHash", [tx_hash], parse=lambda v: shapes.transaction(v, fail)
        )

    # -- validation ------------------------------------------------------------------------

    def _quantity(self, method: str) -> Callable[[Any], int]:
        def parse(value: Any) -> int:
            return shapes.quantity(value, self._fail(method), method)

        return parse

    def _header(self, block: Any, expected: int | str) -> Header:
        """A Header from a block object; ``null`` → BlockNotAvailable, bad fields → Malformed."""
        if block is None:
            raise BlockNotAvailable(
                f"{self.chain}: the node has no block {expected} (yet)",
                chain=self.chain,
                method="eth_getBlockByNumber",
                block=expected,
            )
        if not isinstance(block, dict):
            raise self._malformed(
                "eth_getBlockByNumber", f"block {expected} is not an object: {shapes.peek(block)}"
            )
        return _parse_header(block, expected, self._fail("eth_getBlockByNumber"))

    def _covers(self, value: Any, end: int) -> list[Log]:
        """The answering node's head (``eth_blockNumber``) must reach ``end``: else its logs
        are not taken (BlockNotAvailable, transient: the client asks again)."""
        head = self._quantity("eth_blockNumber")(value)
        if head < end:
            raise BlockNotAvailable(
                f"{self.chain}: the node that answered eth_getLogs up to block {end} has its"
                f" head at {head}",
                chain=self.chain,
                method="eth_getLogs",
                block=head + 1,
            )
        return []

    def _log_list(self, value: Any) -> list[Log]:
        return shapes.logs(value, self._fail("eth_getLogs"))

    def _status(self, receipt: Any, tx_hash: str) -> int:
        method = "eth_getTransactionReceipt"
        if receipt is None:
            raise ReceiptNotAvailable(
                f"{self.chain}: the node has no receipt for {tx_hash} (yet)",
                chain=self.chain,
                method=method,
                tx_hash=tx_hash,
            )
        if not isinstance(receipt, dict):
            raise self._malformed(method, f"receipt of {tx_hash} is not an object")
        return shapes.quantity(receipt.get("status"), self._fail(method), "receipt status")

    def _malformed(self, method: str, why: str) -> MalformedResponse:
        """``why`` quotes the node's answer (:func:`shapes.peek`): scrubbed whole, then cut, so a
        key the cut would split leaves no piece the scrubber no longer knows."""
        shown = self.client.redact(why)[:WHY_SHOWN]
        message = f"{self.chain}: {method}: {shown}"
        return MalformedResponse(message, chain=self.chain, method=method)

    def _fail(self, method: str) -> Fail:
        return lambda why: self._malformed(method, why)


def _topics(topic0: str, to_topics: Sequence[str] | None) -> list[Any]:
    if to_topics is None:
        return [topic0]
    return [topic0, None, list(to_topics)]


def _parse_header(block: dict[str, Any], expected: int | str, fail: Fail) -> Header:
    """Number, hash, parent hash and timestamp, checked; hashes lower-cased."""
    number = shapes.quantity(block.get("number"), fail, "block number")
    if isinstance(expected, int) and number != expected:
        raise fail(f"asked for block {expected}, got {number}")
    return Header(
        number=number,
        hash=shapes.fixed_hex(block.get("hash"), fail, "block hash", 66),
        parent_hash=shapes.fixed_hex(block.get("parentHash"), fail, "block parentHash", 66),
        timestamp=shapes.quantity(block.get("timestamp"), fail, "block timestamp"),
    )
