"""A node's answers parsed at the edge into the scanner's typed values.

Every read of :class:`~scanner.chain.reader.ChainReader` passes the decoded JSON of a result
through one of these parsers before anything above ``chain/`` sees it. A value of the wrong shape
(a receipt that is a list or a string, a ``null`` among the logs, a log without ``blockNumber``,
a number where a hex string belongs) is a :class:`~scanner.errors.MalformedResponse` here, never
an ``AttributeError`` or ``KeyError`` further up.

Logs are the hot path (a backfill reads ~100k a second): the shape of each log is checked (every
field a string, ``topics`` a list of strings), and the fields that repeat across the logs of one
answer (block number and hash, log index, contract address) are parsed once per distinct value.
Topics, data and the transaction hash, which differ from log to log, are decoded by
:mod:`scanner.core.decode` where a Transfer needs them; its strict parsers raise
MalformedResponse too, so a log is never skipped for being malformed.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from scanner.core.decode import strict_hex_int
from scanner.core.model import Log
from scanner.errors import MalformedResponse

Fail = Callable[[str], MalformedResponse]


def show(value: object, window: int) -> str:
    """A picture of any decoded JSON value of at most about ``window`` characters, bounded in
    depth and items whatever the value (``repr`` of a list nested 1,000 deep raises
    RecursionError, of a list of a million items builds megabytes). Strings shorter than
    ``window`` are shown whole, so a scrubber still finds a key in them."""
    if isinstance(value, bytes | bytearray):
        return bytes(value[:window]).decode("utf-8", "replace")
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxlist, shown.maxdict = 3, 8, 8
    shown.maxstring = shown.maxother = shown.maxlong = window
    return shown.repr(value)[:window]


def peek(value: object) -> str:
    """A short picture of any decoded JSON value, for error messages (80 characters)."""
    return show(value, 80)


def quantity(value: Any, fail: Fail, what: str) -> int:
    """An EVM quantity (``"0x1a"``) as an int, by the core's one strict parser."""
    number = strict_hex_int(value)
    if number is None:
        raise fail(f"{what}: expected a hex quantity, got {peek(value)}")
    return number


def fixed_hex(value: Any, fail: Fail, what: str, length: int) -> str:
    """A hash (``length`` 66) or an address (42) as lower-case hex."""
    if type(value) is not str or len(value) != length or strict_hex_int(value) is None:
        raise fail(f"{what}: expected {(length - 2) // 2} bytes of hex, got {peek(value)}")
    return value.lower()


# -- logs --------------------------------------------------------------------------------------

_STRINGS: Final = ("blockNumber", "blockHash", "logIndex", "transactionHash", "address", "data")


def logs(value: Any, fail: Fail) -> list[Log]:
    """An ``eth_getLogs`` result (or a receipt's ``logs``): a list of well-shaped logs, whose
    block number and hash, log index, address and block time are parsed (once per value)."""
    if type(value) is not list:
        raise fail(f"expected a list of logs, got {peek(value)}")
    numbers: set[str] = set()
    hashes: set[str] = set()
    indexes: set[str] = set()
    addresses: set[str] = set()
    times: set[str] = set()
    for position, entry in enumerate(value):
        if not _well_shaped(entry):
            raise _shape_error(entry, position, fail)
        text = entry["blockNumber"]
        if text not in numbers:
            quantity(text, fail, f"log {position} blockNumber")
            numbers.add(text)
        text = entry["blockHash"]
        if text not in hashes:
            fixed_hex(text, fail, f"log {position} blockHash", 66)
            hashes.add(text)
        text = entry["logIndex"]
        if text not in indexes:
            quantity(text, fail, f"log {position} logIndex")
            indexes.add(text)
        text = entry["address"]
        if text not in addresses:
            fixed_hex(text, fail, f"log {position} address", 42)
            addresses.add(text)
        text = entry.get("blockTimestamp")
        if text is not None and text not in times:
            quantity(text, fail, f"log {position} blockTimestamp")
            times.add(text)
    return cast(list[Log], value)


def _well_shaped(entry: Any) -> bool:
    """Whether a log's fields have the JSON types of a log (the hot path: no loop per key)."""
    if type(entry) is not dict:
        return False
    topics = entry.get("topics")
    if not (
        type(entry.get("blockNumber")) is str
        and type(entry.get("blockHash")) is str
        and type(entry.get("logIndex")) is str
        and type(entry.get("transactionHash")) is str
        and type(entry.get("address")) is str
        and type(entry.get("data")) is str
        and type(topics) is list
        and type(entry.get("removed", False)) is bool
        and type(entry.get("blockTimestamp", "")) is str
    ):
        return False
    return all(type(topic) is str for topic in topics)


def _shape_error(entry: Any, position: int, fail: Fail) -> MalformedResponse:
    """What is wrong with a log :func:`_well_shaped` refused."""
    if type(entry) is not dict:
        return fail(f"log {position} is not an object: {peek(entry)}")
    for key in (*_STRINGS, "blockTimestamp"):
        if type(entry.get(key, "")) is not str or (key in _STRINGS and key not in entry):
            return fail(f"log {position}: {key} is not a string: {peek(entry.get(key))}")
    if type(entry.get("removed", False)) is not bool:
        return fail(f"log {position}: removed is not a boolean: {peek(entry.get('removed'))}")
    return fail(f"log {position}: topics is not a list of strings: {peek(entry.get('topics'))}")


# -- receipts and transactions (the verifier's reads) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Receipt:
    """A transaction receipt: its block, its status (None: a receipt from before Byzantium,
    which has none) and its logs."""

    block_hash: str
    status: int | None
    logs: tuple[Log, ...]


@dataclass(frozen=True, slots=True)
class Transaction:
    """What the verifier compares of a native-coin transaction: its recipient and value."""

    to: str | None
    value: int


def receipt(value: Any, fail: Fail) -> Receipt | None:
    """An ``eth_getTransactionReceipt`` result; None for ``null`` (no such transaction, or not
    yet: the caller tells which)."""
    if value is None:
        return None
    if type(value) is not dict:
        raise fail(f"a receipt is not an object: {peek(value)}")
    status = value.get("status")
    return Receipt(
        block_hash=fixed_hex(value.get("blockHash"), fail, "receipt blockHash", 66),
        status=None if status is None else quantity(status, fail, "receipt status"),
        logs=tuple(logs(value.get("logs"), fail)),
    )


def transaction(value: Any, fail: Fail) -> Transaction | None:
    """An ``eth_getTransactionByHash`` result; None for ``null``."""
    if value is None:
        return None
    if type(value) is not dict:
        raise fail(f"a transaction is not an object: {peek(value)}")
    to = value.get("to")
    return Transaction(
        to=None if to is None else fixed_hex(to, fail, "transaction to", 42),
        value=quantity(value.get("value"), fail, "transaction value"),
    )


def full_block(block: dict[str, Any], number: int, fail: Fail) -> dict[str, Any]:
    """A block read with its transactions: a list of transaction objects, each with the fields
    a native transfer is read from as strings (``to`` may be ``null``: a contract creation)."""
    txs = block.get("transactions")
    if type(txs) is not list:
        raise fail(f"block {number}: transactions is not a list: {peek(txs)}")
    for position, tx in enumerate(txs):
        if type(tx) is not dict:
            raise fail(f"block {number} transaction {position} is not an object: {peek(tx)}")
        for key in ("hash", "from", "value"):
            if type(tx.get(key)) is not str:
                raise fail(f"block {number} transaction {position}: {key} is {peek(tx.get(key))}")
        if tx.get("to") is not None and type(tx.get("to")) is not str:
            raise fail(f"block {number} transaction {position}: to is {peek(tx.get('to'))}")
    return block
