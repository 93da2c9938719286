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
MalformedResponse too, so a log is never skipped for being malformed. An answer read whole
(every Transfer of the tokens) is decoded from its bytes into :class:`TypedLog` values, the
JSON types checked by the parser itself (:func:`typed_answers`); any answer it cannot take is
parsed as plain JSON and checked as above.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Container
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from typing import Any, Final, cast

import msgspec

from scanner.core.decode import ADDRESS_TOPIC, Checked, hex_case, passed_over, strict_hex_int
from scanner.core.model import BlockRef, Log, PassedOver
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


PEEK_WINDOW: Final = 4096


def peek(value: object) -> str:
    """A picture of any decoded JSON value for an error message, of up to :data:`PEEK_WINDOW`
    characters: the maker of the error scrubs it whole, then cuts it short (a picture cut first
    could leave a piece of a key the scrubber no longer knows)."""
    return show(value, PEEK_WINDOW)


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
    entries = _log_list(value, fail)
    _check(entries, fail)
    return cast(list[Log], entries)


def sifted(value: Any, fail: Fail, watched: Container[str]) -> tuple[list[Log], PassedOver]:
    """:func:`logs`, passing over the logs :func:`~scanner.core.decode.passed_over` lets go
    (well-shaped Transfer logs to none of the ``watched`` recipient topics): the other logs,
    and what is kept of those passed over (:class:`~scanner.core.model.PassedOver`). Every log
    is checked as :func:`logs` checks it, and the third topic of each one passed over must be
    32 bytes of hex: a malformed log raises, whoever it names.

    The sieve compares the node's strings as they are, allocating nothing per log it passes
    over; the topics it passed over are then checked at once (lower-case hex), and an answer
    where one is not is sifted again log by log, by :func:`passed_over` itself."""
    entries = _log_list(value, fail)
    if entries and type(entries[0]) is TypedLog:
        typed = _sift_typed(entries, watched)
        if typed is not None:
            return typed
        entries = list(map(_plain, entries))  # the plain path says what is wrong
    _check(entries, fail)
    kept, passed, over = _sift(entries, watched)
    if not _lower_hex(passed):
        return _sifted_slowly(entries, fail, watched)
    return kept, over


class TypedLog(msgspec.Struct, gc=False):
    """One ``eth_getLogs`` entry as :func:`typed_answers` decodes it: each field of the JSON
    type of a log's, checked as the bytes are parsed (an answer where one is not is parsed
    again as plain JSON, and checked as any other)."""

    blockNumber: str
    blockHash: str
    logIndex: str
    transactionHash: str
    address: str
    topics: list[str]
    data: str
    removed: bool = False
    blockTimestamp: str | msgspec.UnsetType = msgspec.UNSET


class _Answer(msgspec.Struct, gc=False):
    """A JSON-RPC response object whose ``result`` is logs, or a quantity (``eth_blockNumber``
    beside them)."""

    jsonrpc: Any = msgspec.UNSET
    id: Any = msgspec.UNSET
    result: list[TypedLog] | str | msgspec.UnsetType | None = msgspec.UNSET
    error: Any = msgspec.UNSET


_ANSWERS: Final = msgspec.json.Decoder(list[_Answer])
_ANSWER_FIELDS: Final = _Answer.__struct_fields__


def typed_answers(content: bytes | bytearray) -> list[dict[str, Any]] | None:
    """A batch's answer of ``eth_getLogs`` (and ``eth_blockNumber``) decoded with its logs as
    :class:`TypedLog`: their types are checked by the parser, and no dict is built for a log
    the sieve passes over. None for any other body (not JSON, not a list of response objects,
    a log of another shape, JSON nested deeper than the decoder goes): the caller parses it as
    plain JSON, and its checks say what is wrong with it."""
    try:
        answers = _ANSWERS.decode(content)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    return [
        {
            key: value
            for key in _ANSWER_FIELDS
            if (value := getattr(answer, key)) is not msgspec.UNSET
        }
        for answer in answers
    ]


def _sift_typed(
    entries: list[TypedLog], watched: Container[str]
) -> tuple[list[Log], PassedOver] | None:
    """:func:`sifted` of logs decoded as :class:`TypedLog` (their JSON types checked as they
    were parsed): each distinct block number and hash, log index, address and block time
    parsed once, then the sieve, log by log on the typed values. None when anything is not
    as it should be (a value that is not hex, a third topic passed over that is not lower-case
    hex): the plain path then says what."""
    for key, length in _PARSED:
        values = set(map(attrgetter(key), entries))
        values.discard(msgspec.UNSET)
        if hex_case(values, length) is None:
            return None
    kept: list[Log] = []
    passed: list[str] = []
    blocks: list[BlockRef] = []
    zero = 0
    number = block_hash = None
    watching = watched.__contains__
    for entry in entries:
        topics, data = entry.topics, entry.data
        recipient = topics[2] if len(topics) == 3 and len(data) == 66 else _NOT_A_TOPIC
        if watching(recipient) or len(recipient) != 66 or not recipient.startswith(ADDRESS_TOPIC):
            kept.append(_plain(entry))
            continue
        passed.append(recipient)
        if data == _ZERO_DATA:
            zero += 1
        if entry.blockHash != block_hash or entry.blockNumber != number:
            number, block_hash = entry.blockNumber, entry.blockHash
            stamp = entry.blockTimestamp
            blocks.append((number, block_hash, None if stamp is msgspec.UNSET else stamp))
    if not _lower_hex(passed):
        return None
    return kept, PassedOver(len(passed), tuple(blocks), zero)


def plain(value: Any) -> Any:
    """An answer's logs as the node's JSON objects, where :func:`typed_answers` typed them (for
    :func:`logs`, which checks JSON); any other value as it is."""
    if type(value) is list and value and type(value[0]) is TypedLog:
        return list(map(_plain, value))
    return value


def _plain(entry: TypedLog) -> Log:
    """A typed log as the node's JSON object (``blockTimestamp`` only when the node sent it)."""
    return cast(Log, msgspec.to_builtins(entry))


def _sift(entries: list[Any], watched: Container[str]) -> tuple[list[Log], list[str], PassedOver]:
    """The logs to keep, the third topics of those passed over (to check), and what is kept of
    those: a log is passed over when its shape is a Transfer's (three topics, 32 bytes of data)
    and its third topic, as the node spells it, is an address topic outside ``watched``."""
    kept: list[Log] = []
    passed: list[str] = []
    blocks: list[BlockRef] = []
    zero = 0
    number = block_hash = None
    for entry in entries:
        topics, data = entry["topics"], entry["data"]
        recipient = topics[2] if len(topics) == 3 and len(data) == 66 else _NOT_A_TOPIC
        if recipient in watched or len(recipient) != 66 or not recipient.startswith(ADDRESS_TOPIC):
            kept.append(entry)
            continue
        passed.append(recipient)
        zero += data == _ZERO_DATA
        if entry["blockHash"] != block_hash or entry["blockNumber"] != number:
            number, block_hash = entry["blockNumber"], entry["blockHash"]
            blocks.append((number, block_hash, entry.get("blockTimestamp")))
    return kept, passed, PassedOver(len(passed), tuple(blocks), zero)


_NOT_A_TOPIC: Final = ""
_ZERO_DATA: Final = "0x" + "0" * 64
_LOWER_HEX: Final = b"0123456789abcdef"


def _lower_hex(topics: list[str]) -> bool:
    """Whether each of ``topics`` (66 characters, ``0x`` first) is lower-case hex after it."""
    try:
        text = "".join(topics).encode("ascii")
    except UnicodeEncodeError:
        return False
    return len(text.translate(None, _LOWER_HEX)) == len(topics)  # each one's "x" is left


def _sifted_slowly(
    entries: list[Any], fail: Fail, watched: Container[str]
) -> tuple[list[Log], PassedOver]:
    """:func:`sifted` log by log, by :func:`~scanner.core.decode.passed_over` (an answer with
    a third topic in upper case, or not hex: it raises, unless the log is decoded in full)."""
    checked = Checked()
    kept: list[Log] = []
    blocks: list[BlockRef] = []
    count = zero = 0
    for position, entry in enumerate(entries):
        try:
            why = passed_over(entry["topics"], entry["data"], watched, checked)
        except MalformedResponse as exc:
            raise fail(f"log {position}: {exc}") from None
        if why is None:
            kept.append(entry)
            continue
        count, zero = count + 1, zero + (why == "zero_value")
        ref = (entry["blockNumber"], entry["blockHash"], entry.get("blockTimestamp"))
        if not blocks or blocks[-1][:2] != ref[:2]:
            blocks.append(ref)
    return kept, PassedOver(count, tuple(blocks), zero)


def _log_list(value: Any, fail: Fail) -> list[Any]:
    if type(value) is not list:
        raise fail(f"expected a list of logs, got {peek(value)}")
    return value


def _check(entries: list[Any], fail: Fail) -> None:
    """Every log's shape, then each distinct block number and hash, log index, address and
    block time, parsed once (the logs of an answer repeat them)."""
    if not all(map(_well_shaped, entries)):
        position = next(i for i, entry in enumerate(entries) if not _well_shaped(entry))
        raise _shape_error(entries[position], position, fail)
    for key, length in _PARSED:
        for text in set(map(dict.get, entries, repeat(key))):
            if text is None or _hex_of(text, length):  # no blockTimestamp: a node may omit it
                continue
            what = f"log {_first(entries, key, text)} {key}"
            if length:
                fixed_hex(text, fail, what, length)
            quantity(text, fail, what)


def _hex_of(text: str, length: int) -> bool:
    """Whether ``text`` is strict hex, of ``length`` characters when that is not 0."""
    return (not length or len(text) == length) and strict_hex_int(text) is not None


def _first(entries: list[Any], key: str, text: str) -> int:
    return next(i for i, entry in enumerate(entries) if entry.get(key) == text)


#: The fields parsed once per distinct value: hex of a fixed length, or a quantity (0).
_PARSED: Final = (
    ("blockNumber", 0),
    ("blockHash", 66),
    ("logIndex", 0),
    ("address", 42),
    ("blockTimestamp", 0),
)


def _well_shaped(entry: Any) -> bool:
    """Whether a log's fields have the JSON types of a log (the hot path: no loop per key)."""
    if type(entry) is not dict:
        return False
    try:
        topics = entry["topics"]
        if not (
            type(entry["blockNumber"]) is str
            and type(entry["blockHash"]) is str
            and type(entry["logIndex"]) is str
            and type(entry["transactionHash"]) is str
            and type(entry["address"]) is str
            and type(entry["data"]) is str
            and type(topics) is list
        ):
            return False
    except KeyError:
        return False
    if type(entry.get("removed", False)) is not bool:
        return False
    if type(entry.get("blockTimestamp", "")) is not str:
        return False
    for topic in topics:  # noqa: SIM110 - a generator in all() costs a third of the check
        if type(topic) is not str:
            return False
    return True


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
