"""A TRON node's JSON-RPC, simulated: what java-tron's ``/jsonrpc`` answers, with TRC-20
transfers that a test or the demo makes, for a chain of kind ``tron`` where no java-tron runs.

TRON has no local dev node like anvil; this stands in for one, end to end over HTTP, in a
process of its own (``python -m scanner.devchain.tron --port N``; :class:`TronNode` starts it).
It follows java-tron 4.8.1's code and 4.8.2's documentation:

- ``eth_chainId`` / ``net_version``: the last 4 bytes of block 0's id (mainnet ``0x2b6653dc``)
  (``TronJsonRpcImpl.ethChainId``).
- A block's ``hash`` is its BlockId: the height in the first 8 bytes, then bytes 8..31 of a
  sha256 of the header (``JsonRpcApiUtil.getBlockID``); ``timestamp`` in seconds
  (``BlockResult``: ``getTimeStamp() / 1000``), also as the logs' ``blockTimestamp`` (4.8.2);
  ``logsBloom`` all zero and the other constant fields as ``BlockResult`` writes them; every
  result object's fields in alphabetic order (``@JsonPropertyOrder(alphabetic = true)``).
- Tags: ``latest``, ``earliest``, ``finalized`` (the solidified block, ``head − 18`` when the 27
  super representatives produce in turn: ``DposService.updateSolidBlock``); ``pending`` and
  ``safe`` are ``-32602 TAG … not supported``; block methods take a height in hex or decimal,
  ``eth_getLogs`` only ``0x`` hex (``Wallet.getByJsonBlockId``, ``ByteArray.jsonHexToLong``).
- ``eth_getLogs``: at most 5,000 blocks (``-32602 exceed max block range: 5000``, checked as
  ``min(toBlock, head) - fromBlock``) and 10,000 results (``-32005 query returned more than
  10000 results``, checked after each block) (``LogFilterWrapper``, ``LogBlockQuery``); the
  address filter takes 20-byte hex only (``-32602 invalid address: …`` for base58 or
  41-prefixed, ``JsonRpcApiUtil.addressToByteArray``); ``blockHash`` with a range is refused.
- ``eth_getBlockReceipts``: by height, tag or hash; ``null`` for unknown blocks and for block 0
  (``TronJsonRpcImpl.getBlockReceipts``). A receipt's ``status`` is ``0x1`` for success.
- Errors come with HTTP 200 (``JsonRpcServlet``), ``data: "{}"``; more than 100 requests in a
  batch are one ``-32005`` error (4.8.2); the rate limiter answers HTTP 200 with
  ``{"Error": "class java.lang.IllegalAccessException : lack of computing resources"}``.
- Reorgs switch only to a longer branch, never below the solidified block.

Test controls (methods of their own, as anvil's ``anvil_*``): ``sim_transfer``, ``sim_mine``,
``sim_reorg``, ``sim_token`` (a contract's ``decimals()`` for ``eth_call``), ``sim_disable``
(a method answered ``-32601``, as by a node or proxy without it), ``sim_apiKey`` (TronGrid's
``TRON-PRO-API-KEY`` header required, HTTP 401 without it), ``sim_hideLogs``
(a transaction's logs vanish from ``eth_getLogs`` but stay in its receipt: java-tron #4447,
#6037, #6384), ``sim_rateLimit``, ``sim_solidDistance``, ``sim_bulk`` (many blocks of
transfers at once).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from scanner.devchain.node import Anvil

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
MAINNET_GENESIS = "00000000000000001ebf88508a03865c71d452e25f4d51194196a1d22b6653dc"
MAX_BLOCK_RANGE = 5_000
MAX_RESULTS = 10_000
MAX_BATCH = 100
SOLID_DISTANCE = 18  # 27 super representatives, 70 % of them: head − 18 (DposService)
BLOCK_SECONDS = 3
NO_KEY = {"Error": "ApiKey not exists"}  # TronGrid, a request without a valid key
RATE_LIMITED = {"Error": "class java.lang.IllegalAccessException : lack of computing resources"}
Json = Any


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _hex(n: int) -> str:
    return hex(n)


def _word(value: int) -> str:
    return "0x" + f"{value:064x}"


def _topic_address(address: str) -> str:
    return "0x" + "0" * 24 + address.removeprefix("0x").lower()


@dataclass
class Log:
    address: str  # 0x + 20-byte hex of the contract that emitted it
    topics: list[str]
    data: str


@dataclass
class Tx:
    hash: str
    sender: str
    to: str  # the contract called (the token, or a contract that calls the token)
    logs: list[Log]
    success: bool = True
    hidden: bool = False  # its logs are missing from eth_getLogs, not from its receipt


@dataclass
class Block:
    number: int
    id: str
    parent: str
    timestamp: int  # seconds
    txs: list[Tx] = field(default_factory=list)


def block_id(number: int, parent: str, timestamp: int, salt: str, txs: Sequence[Tx]) -> str:
    """The BlockId: the height in 8 bytes, then bytes 8..31 of the header's sha256."""
    header = json.dumps([number, parent, timestamp, salt, [t.hash for t in txs]]).encode()
    return "0x" + f"{number:016x}" + hashlib.sha256(header).hexdigest()[16:]


class TronChain:
    """The simulated chain: its blocks, the transactions waiting for the next one, the faults."""

    def __init__(self, genesis_time: int | None = None, solid_distance: int = SOLID_DISTANCE):
        start = int(time.time()) - 3600 if genesis_time is None else genesis_time
        self.chain_id = "0x" + MAINNET_GENESIS[-8:]
        genesis = Block(0, "0x" + MAINNET_GENESIS, "0x" + "00" * 32, start)
        self.blocks: list[Block] = [genesis]
        self.by_id: dict[str, Block] = {genesis.id: genesis}
        self.pending: list[Tx] = []
        self.solid_distance = solid_distance
        self.rps: float | None = None
        self.decimals: dict[str, int] = {}  # TRC-20 contracts and their decimals()
        self.disabled: set[str] = set()  # methods answered -32601 (sim_disable)
        self.api_key: str | None = None  # TronGrid's TRON-PRO-API-KEY header, when required
        self._window: list[float] = []
        self._tx_seq = 0
        self._fork = 0

    # -- the chain's state ----------------------------------------------------------------

    @property
    def head(self) -> Block:
        return self.blocks[-1]

    @property
    def solid(self) -> int:
        return max(0, self.head.number - self.solid_distance)

    def mine(self, count: int = 1, salt: str = "") -> list[str]:
        ids = []
        for _ in range(count):
            parent = self.head
            txs, self.pending = self.pending, []
            stamp = parent.timestamp + BLOCK_SECONDS
            number = parent.number + 1
            block = Block(
                number, block_id(number, parent.id, stamp, salt, txs), parent.id, stamp, txs
            )
            self.blocks.append(block)
            self.by_id[block.id] = block
            ids.append(block.id)
        return ids

    def transfer(
        self,
        token: str,
        sender: str,
        to: str,
        value: int,
        *,
        via: str | None = None,
        success: bool = True,
        also: Sequence[tuple[str, int]] = (),
    ) -> str:
        """A TRC-20 transfer (and ``also``: more recipients in the same transaction, a batch
        payout) waiting for the next block. ``via``: the contract the transaction called, which
        made the transfers (an exchange's withdrawal): the logs are the token's all the same. A
        failed transaction (``success=False``) leaves no log."""
        self._tx_seq += 1
        tx_hash = "0x" + hashlib.sha256(f"tx-{self._tx_seq}-{time.time_ns()}".encode()).hexdigest()
        pays = [(to, value), *also]
        logs = (
            [
                Log(
                    token.lower(),
                    [TRANSFER_TOPIC, _topic_address(sender), _topic_address(r)],
                    _word(v),
                )
                for r, v in pays
            ]
            if success
            else []
        )
        self.pending.append(Tx(tx_hash, sender.lower(), (via or token).lower(), logs, success))
        return tx_hash

    def bulk(self, token: str, blocks: int, per_block: int, recipients: Sequence[str]) -> None:
        """``blocks`` blocks of one transaction each, paying ``per_block`` transfers of 1.000000
        to ``recipients`` in turn (an exchange's batched payouts)."""
        n = 0
        for _ in range(blocks):
            pays = [(recipients[(n + i) % len(recipients)], 1_000_000) for i in range(per_block)]
            n += per_block
            self.transfer(token, "0x" + "a1" * 20, pays[0][0], pays[0][1], also=pays[1:])
            self.mine(1)

    def reorg(self, depth: int, length: int, keep: bool = True) -> list[str]:
        """Replace the newest ``depth`` blocks with a branch of ``length`` new ones (TRON takes
        only a longer branch); never at or below the solidified block. Their transactions wait
        for the new branch's first block, as a node's pool keeps them (``keep=False``: the
        branch never includes them, as when a conflicting transaction won)."""
        if length <= depth:
            raise RpcError(-32602, "a TRON node switches only to a longer branch")
        if self.head.number - depth < self.solid:
            raise RpcError(-32602, "cannot reorganize at or below the solidified block")
        dropped = self.blocks[len(self.blocks) - depth :]
        del self.blocks[len(self.blocks) - depth :]
        if keep:
            self.pending = [tx for b in dropped for tx in b.txs] + self.pending
        self._fork += 1
        return self.mine(length, salt=f"fork-{self._fork}")

    def hide_logs(self, tx_hash: str) -> None:
        self._tx(tx_hash).hidden = True

    def _tx(self, tx_hash: str) -> Tx:
        for block in self.blocks:
            for tx in block.txs:
                if tx.hash == tx_hash:
                    return tx
        for tx in self.pending:
            if tx.hash == tx_hash:
                return tx
        raise RpcError(-32602, f"unknown transaction {tx_hash}")

    def limited(self) -> bool:
        """Whether this request is over the configured rate (a sliding second)."""
        if self.rps is None:
            return False
        now = time.monotonic()
        self._window = [t for t in self._window if now - t < 1.0]
        if len(self._window) >= self.rps:
            return True
        self._window.append(now)
        return False

    # -- reading blocks ---------------------------------------------------------------------

    def block_at(self, tag: Json, *, logs: bool = False) -> Block | None:
        number = self._number(tag, logs=logs)
        return self.blocks[number] if 0 <= number < len(self.blocks) else None

    def _number(self, tag: Json, *, logs: bool = False) -> int:
        if not isinstance(tag, str):
            raise RpcError(-32602, "invalid block number")
        if tag in ("latest", "earliest", "finalized"):
            return {"latest": self.head.number, "earliest": 0, "finalized": self.solid}[tag]
        if tag in ("pending", "safe"):
            raise RpcError(-32602, f"TAG {tag} not supported")
        try:
            if tag.startswith(("0x", "0X")):
                return int(tag, 16)
            if logs:
                raise ValueError(tag)
            return int(tag, 10)
        except ValueError:
            raise RpcError(
                -32602, "Incorrect hex syntax" if logs else "invalid block number"
            ) from None


# -- answers, in java-tron's shapes -----------------------------------------------------------


def _log_objects(block: Block, tx_index: int, tx: Tx, first: int) -> list[dict[str, Json]]:
    return [
        {
            "address": log.address,
            "blockHash": block.id,
            "blockNumber": _hex(block.number),
            "blockTimestamp": _hex(block.timestamp),
            "data": log.data,
            "logIndex": _hex(first + i),
            "removed": False,
            "topics": list(log.topics),
            "transactionHash": tx.hash,
            "transactionIndex": _hex(tx_index),
        }
        for i, log in enumerate(tx.logs)
    ]


def _block_logs(block: Block) -> list[tuple[Tx, dict[str, Json]]]:
    """Every log of the block with its transaction (``logIndex`` counts all of the block's)."""
    out: list[tuple[Tx, dict[str, Json]]] = []
    for index, tx in enumerate(block.txs):
        out += [(tx, obj) for obj in _log_objects(block, index, tx, len(out))]
    return out


def transaction_object(block: Block, index: int, tx: Tx) -> dict[str, Json]:
    return {
        "blockHash": block.id,
        "blockNumber": _hex(block.number),
        "from": tx.sender,
        "gas": "0x0",
        "gasPrice": "0xd2",
        "hash": tx.hash,
        "input": "0xa9059cbb",
        "nonce": None,
        "r": "0x" + "00" * 32,
        "s": "0x" + "00" * 32,
        "to": tx.to,
        "transactionIndex": _hex(index),
        "type": "0x0",
        "v": "0x1b",
        "value": "0x0",
    }


def block_object(block: Block, full: bool) -> dict[str, Json]:
    txs = [transaction_object(block, i, t) if full else t.hash for i, t in enumerate(block.txs)]
    return {
        "baseFeePerGas": "0x0",
        "difficulty": "0x0",
        "extraData": "0x",
        "gasLimit": "0x0",
        "gasUsed": "0x0",
        "hash": block.id,
        "logsBloom": "0x" + "00" * 256,
        "miner": "0x" + "11" * 20,
        "mixHash": "0x" + "00" * 32,
        "nonce": "0x" + "00" * 8,
        "number": _hex(block.number),
        "parentHash": block.parent,
        "receiptsRoot": "0x" + "00" * 32,
        "sha3Uncles": "0x" + "00" * 32,
        "size": _hex(200 + 300 * len(block.txs)),
        "stateRoot": "0x",
        "timestamp": _hex(block.timestamp),
        "totalDifficulty": "0x0",
        "transactions": txs,
        "transactionsRoot": "0x" + "00" * 32,
        "uncles": [],
    }


def receipt_object(block: Block, index: int, tx: Tx, first_log: int) -> dict[str, Json]:
    return {
        "blockHash": block.id,
        "blockNumber": _hex(block.number),
        "contractAddress": None,
        "cumulativeGasUsed": "0x0",
        "effectiveGasPrice": "0xd2",
        "from": tx.sender,
        "gasUsed": "0x0",
        "logs": _log_objects(block, index, tx, first_log),
        "logsBloom": "0x" + "00" * 256,
        "status": "0x1" if tx.success else "0x0",
        "to": tx.to,
        "transactionHash": tx.hash,
        "transactionIndex": _hex(index),
        "type": "0x0",
    }


def block_receipts(block: Block) -> list[dict[str, Json]]:
    out, first = [], 0
    for index, tx in enumerate(block.txs):
        out.append(receipt_object(block, index, tx, first))
        first += len(tx.logs)
    return out


# -- eth_getLogs -----------------------------------------------------------------------------

_FILTER_KEYS = {"fromBlock", "toBlock", "address", "topics", "blockHash"}


def _addresses(value: Json) -> set[str] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    out = set()
    for i, item in enumerate(items):
        raw = item.removeprefix("0x").lower() if isinstance(item, str) else ""
        if len(raw) != 40 or any(c not in "0123456789abcdef" for c in raw):
            where = f" at index {i}" if isinstance(value, list) else ""
            raise RpcError(-32602, f"invalid address{where}: {item}")
        out.add("0x" + raw)
    return out


def _topics(value: Json) -> list[set[str] | None]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 4:
        raise RpcError(-32602, "topics size should be <= 4")
    out: list[set[str] | None] = []
    for position in value:
        if position is None:
            out.append(None)
        elif isinstance(position, str):
            out.append({position.lower()})
        elif isinstance(position, list):
            out.append({str(t).lower() for t in position})
        else:
            raise RpcError(-32602, "invalid topic(s)")
    return out


def _matches(
    log: dict[str, Json], addresses: set[str] | None, topics: list[set[str] | None]
) -> bool:
    if addresses is not None and log["address"] not in addresses:
        return False
    have = log["topics"]
    for i, wanted in enumerate(topics):
        if wanted is not None and (i >= len(have) or have[i].lower() not in wanted):
            return False
    return True


def get_logs(chain: TronChain, criteria: Json) -> list[dict[str, Json]]:
    if not isinstance(criteria, dict) or set(criteria) - _FILTER_KEYS:
        raise RpcError(-32700, "JSON parse error")
    addresses, topics = _addresses(criteria.get("address")), _topics(criteria.get("topics"))
    if criteria.get("blockHash") is not None:
        if "fromBlock" in criteria or "toBlock" in criteria:
            raise RpcError(
                -32602,
                "cannot specify both BlockHash and FromBlock/ToBlock, choose one or the other",
            )
        block = chain.by_id.get(str(criteria["blockHash"]).lower())
        if block is None or chain.blocks[block.number] is not block:
            raise RpcError(-32602, "invalid blockHash")
        numbers = range(block.number, block.number + 1)
    else:
        head = chain.head.number
        low = chain._number(criteria.get("fromBlock", "latest"), logs=True)
        high = chain._number(criteria.get("toBlock", "latest"), logs=True)
        if min(high, head) - low > MAX_BLOCK_RANGE:
            raise RpcError(-32602, f"exceed max block range: {MAX_BLOCK_RANGE}")
        numbers = range(low, min(high, head) + 1)
    found: list[dict[str, Json]] = []
    for number in numbers:
        for tx, log in _block_logs(chain.blocks[number]):
            if not tx.hidden and _matches(log, addresses, topics):
                found.append(log)
        if len(found) > MAX_RESULTS:
            raise RpcError(-32005, f"query returned more than {MAX_RESULTS} results")
    return found


# -- methods ---------------------------------------------------------------------------------


def _receipt(chain: TronChain, tx_hash: Json) -> Json:
    for block in chain.blocks:
        first = 0
        for index, tx in enumerate(block.txs):
            if tx.hash == tx_hash:
                return receipt_object(block, index, tx, first)
            first += len(tx.logs)
    return None


def _block_by_hash(chain: TronChain, block_hash: Json, full: Json) -> Json:
    block = chain.by_id.get(str(block_hash).lower())
    if block is None or chain.blocks[block.number] is not block:
        return None
    return block_object(block, bool(full))


def _block_receipts(chain: TronChain, which: Json) -> Json:
    if isinstance(which, str) and len(which) == 66:
        block = chain.by_id.get(which.lower())
        block = block if block is not None and chain.blocks[block.number] is block else None
    else:
        block = chain.block_at(which)
    if block is None or block.number == 0:
        return None
    return block_receipts(block)


DECIMALS_SELECTOR = "0x313ce567"


def _call(chain: TronChain, call: Json, tag: Json) -> Json:
    """``eth_call`` of ``decimals()`` on a contract ``sim_token`` made; ``0x`` for anything else
    (a call to an account with no code returns nothing). ``latest`` only, as java-tron
    (``TronJsonRpcImpl.call``: ``-32602 TAG … not supported`` for another tag)."""
    if tag != "latest":
        raise RpcError(-32602, "TAG [earliest | pending | finalized] not supported")
    to = str(call.get("to", "")).lower()
    data = str(call.get("data") or call.get("input") or "")
    contract = "0x" + to.removeprefix("0x")
    if contract in chain.decimals and data.lower() == DECIMALS_SELECTOR:
        return _word(chain.decimals[contract])
    return "0x"


def _control(chain: TronChain, name: str, params: list[Json]) -> Json:
    if name == "sim_transfer":
        spec = params[0]
        return chain.transfer(
            spec["token"], spec["from"], spec["to"], int(spec["value"]), via=spec.get("via"),
            success=spec.get("success", True),
            also=[(a, int(v)) for a, v in spec.get("also", [])],
        )  # fmt: skip
    if name == "sim_disable":  # a node (or a proxy before it) that does not serve a method
        chain.disabled.add(str(params[0]))
        return True
    if name == "sim_apiKey":  # from now on, a TRON-PRO-API-KEY header is required
        chain.api_key = None if params[0] is None else str(params[0])
        return True
    if name == "sim_token":
        chain.decimals[str(params[0]).lower()] = int(params[1])
        return True
    if name == "sim_bulk":  # blocks of Transfer logs, built in-process (benchmarks)
        spec = params[0]
        chain.bulk(spec["token"], int(spec["blocks"]), int(spec["perBlock"]), spec["recipients"])
        return _hex(chain.head.number)
    if name == "sim_mine":
        return chain.mine(int(params[0]) if params else 1)
    if name == "sim_reorg":
        return chain.reorg(int(params[0]), int(params[1]), bool(params[2]) if params[2:] else True)
    if name == "sim_hideLogs":
        chain.hide_logs(params[0])
        return True
    if name == "sim_rateLimit":
        chain.rps = None if params[0] is None else float(params[0])
        return True
    if name == "sim_solidDistance":
        chain.solid_distance = int(params[0])
        return True
    raise RpcError(-32601, "method not found")


Method = Callable[[TronChain, list[Json]], Json]
METHODS: Mapping[str, Method] = {
    "eth_chainId": lambda c, p: c.chain_id,
    "net_version": lambda c, p: c.chain_id,
    "eth_blockNumber": lambda c, p: _hex(c.head.number),
    "eth_getBlockByNumber": lambda c, p: (
        None if (b := c.block_at(p[0])) is None else block_object(b, bool(p[1]))
    ),
    "eth_getBlockByHash": lambda c, p: _block_by_hash(c, p[0], p[1]),
    "eth_getLogs": lambda c, p: get_logs(c, p[0]),
    "eth_getTransactionReceipt": lambda c, p: _receipt(c, p[0]),
    "eth_getBlockReceipts": lambda c, p: _block_receipts(c, p[0]),
    "eth_call": lambda c, p: _call(c, p[0], p[1]),
}
ARITY = {"eth_getBlockByNumber": 2, "eth_getBlockByHash": 2, "eth_call": 2}


def answer_one(chain: TronChain, request: Json) -> Json:
    ident = request.get("id") if isinstance(request, dict) else None
    try:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            raise RpcError(-32600, "Invalid Request")
        name, params = request["method"], request.get("params") or []
        if not isinstance(params, list):
            raise RpcError(-32602, "method parameters invalid")
        if name.startswith("sim_"):
            result = _control(chain, name, params)
        elif name not in METHODS or name in chain.disabled:
            raise RpcError(-32601, "method not found")
        else:
            if len(params) < ARITY.get(
                name, 0 if name in ("eth_chainId", "net_version", "eth_blockNumber") else 1
            ):
                raise RpcError(-32602, "method parameters invalid")
            result = METHODS[name](chain, params)
        return {"jsonrpc": "2.0", "id": ident, "result": result}
    except RpcError as exc:
        return {
            "jsonrpc": "2.0",
            "id": ident,
            "error": {"code": exc.code, "message": exc.message, "data": "{}"},
        }
    except (KeyError, IndexError, TypeError, ValueError):
        return {
            "jsonrpc": "2.0",
            "id": ident,
            "error": {"code": -32602, "message": "method parameters invalid", "data": "{}"},
        }


def answer(chain: TronChain, document: Json) -> Json:
    """The body for one request or a batch; always sent with HTTP 200."""
    controls = isinstance(document, dict) and str(document.get("method", "")).startswith("sim_")
    if not controls and chain.limited():
        return RATE_LIMITED
    if isinstance(document, list):
        if not document:
            return {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32600, "message": "Invalid Request", "data": "{}"},
            }
        if len(document) > MAX_BATCH:
            message = f"Batch size {len(document)} exceeds the limit of {MAX_BATCH}"
            return {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32005, "message": message, "data": "{}"},
            }
        return [answer_one(chain, item) for item in document]
    return answer_one(chain, document)


# -- the server ------------------------------------------------------------------------------


def make_app(chain: TronChain, block_seconds: float | None = None) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        key = chain.api_key
        if key is not None and request.headers.get("TRON-PRO-API-KEY") != key:
            return web.Response(
                status=401, text=json.dumps(NO_KEY), content_type="application/json"
            )
        try:
            document = json.loads(await request.read())
        except ValueError:
            body: Json = {
                "jsonrpc": "2.0",
                "id": "null",
                "error": {"code": -32700, "message": "JSON parse error", "data": "{}"},
            }
        else:
            body = answer(chain, document)
        return web.Response(status=200, text=json.dumps(body), content_type="application/json")

    async def produce(app: web.Application) -> Any:
        async def loop() -> None:
            while True:
                await asyncio.sleep(block_seconds or 0)
                chain.mine(1)

        task = asyncio.create_task(loop()) if block_seconds else None
        yield
        if task is not None:
            task.cancel()

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/jsonrpc", handle)
    app.router.add_post("/", handle)
    app.cleanup_ctx.append(produce)
    return app


class TronNode(Anvil):
    """The simulator as a child process on 127.0.0.1, started and driven like an anvil node
    (``TronNode.start(blocks=N, block_seconds=S)``); its JSON-RPC is at ``url`` (``/jsonrpc``,
    where java-tron serves it)."""

    @classmethod
    def _args(cls, **options: Any) -> list[str]:
        blocks, seconds = int(options.get("blocks", 0)), float(options.get("block_seconds", 0.0))
        args = ["--blocks", str(blocks), "--block-seconds", f"{seconds:g}"]
        if options.get("genesis_time") is not None:
            args += ["--genesis-time", str(int(options["genesis_time"]))]
        return args

    @classmethod
    def _command(cls, port: int, args: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "scanner.devchain.tron", "--port", str(port), *args]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jsonrpc"

    def transfer(self, token: str, sender: str, to: str, value: int, **more: Any) -> str:
        spec = {"token": token, "from": sender, "to": to, "value": value, **more}
        return str(self.rpc("sim_transfer", [spec]))

    def mine(self, count: int = 1) -> list[str]:
        return list(self.rpc("sim_mine", [count]))

    def token(self, address: str, decimals: int) -> None:
        """Make ``address`` a TRC-20 contract whose ``decimals()`` answers ``decimals``."""
        self.rpc("sim_token", [address, decimals])

    def reorg(self, depth: int, length: int, keep: bool = True) -> list[str]:
        return list(self.rpc("sim_reorg", [depth, length, keep]))

    def head(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A simulated java-tron JSON-RPC node")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--block-seconds", type=float, default=0.0, help="0: mine on request")
    parser.add_argument("--blocks", type=int, default=0, help="blocks mined before serving")
    parser.add_argument("--genesis-time", type=int, help="block 0's time (default: an hour ago)")
    args = parser.parse_args(argv)
    chain = TronChain(args.genesis_time)
    chain.mine(args.blocks)
    web.run_app(
        make_app(chain, args.block_seconds or None), host="127.0.0.1", port=args.port,
        print=None, handle_signals=True,
    )  # fmt: skip


if __name__ == "__main__":
    main()
