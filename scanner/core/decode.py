"""Raw JSON-RPC answers → transfers (amounts and addresses: :mod:`scanner.core.amounts`).

The input is what the node sends (camelCase keys, ``0x``-hex strings), before any library touches
it. Decoding slices hex strings: this is the hot path (a backfill decodes ~100k logs a second),
so there is no web3, no eth_abi, no regular expression per log.

Two kinds of bad input, told apart on purpose:

- a log that is a log but not an ERC-20 Transfer we can credit (four topics, odd data, zero
  value, a contract we do not watch, a ``removed`` log) is *skipped* and counted by reason in
  :attr:`DecodeResult.skipped`; it never stops the scan;
- an answer that is not a log at all (a missing field, a non-hex quantity, a hash of the wrong
  length, a block timestamp we were not given) is the node's fault: it raises
  :class:`~scanner.errors.MalformedResponse` and is never skipped silently.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from scanner.core.model import NATIVE_LOG_INDEX, BlockRef, Header, Transfer
from scanner.errors import MalformedResponse

T = TypeVar("T")

#: keccak256("Transfer(address,address,uint256)")
TRANSFER_TOPIC: Final = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"

#: Skip reasons, the keys of :attr:`DecodeResult.skipped`.
SKIP_REASONS: Final = ("removed", "unknown_token", "topics", "data", "zero_value")

_ZERO_PAD: Final = "0" * 24  # the upper 12 bytes of an address topic, as hex
#: How a topic that holds an address begins (its upper 12 bytes zero).
ADDRESS_TOPIC: Final = "0x" + _ZERO_PAD


@dataclass(frozen=True, slots=True)
class DecodeResult:
    """Transfers sorted by ``(block_number, log_index)``, and skipped logs counted by reason."""

    transfers: list[Transfer]
    skipped: dict[str, int] = field(default_factory=dict)


# --- hex primitives (strict: no whitespace, signs, underscores or non-ASCII digits) ------------


# ``int(text, 16)`` accepts a "0x" prefix but also whitespace, signs, underscores and non-ASCII
# digits: ``isalnum() and isascii()`` on the whole string (prefix included) shuts those out.


def strict_hex_int(value: object) -> int | None:
    """The value of a strict ``0x``-hex string (at least one digit), else None.

    The one hex parser of the scanner: the chain reader uses it too, so that a node answering
    ``"0x_1"`` or ``"0x 1"`` (which ``int(text, 16)`` accepts) is a MalformedResponse."""
    if isinstance(value, str) and value[:2] == "0x" and value.isalnum() and value.isascii():
        try:
            return int(value, 16)
        except ValueError:  # "0x" alone, or letters beyond f
            return None
    return None


def hex_quantity(value: object, what: str) -> int:
    """A JSON-RPC quantity (``0x``-hex) as an int; MalformedResponse when it is not one."""
    number = strict_hex_int(value)
    if number is None:
        raise MalformedResponse(f"{what} is not a hex quantity: {value!r:.80}")
    return number


def _fixed_hex(value: object, what: str, length: int) -> str:
    if not isinstance(value, str) or len(value) != length or strict_hex_int(value) is None:
        raise MalformedResponse(f"{what} is not {(length - 2) // 2} bytes of hex: {value!r:.80}")
    return value.lower()


def hex_hash(value: object, what: str) -> str:
    """A 32-byte hash, lower-cased; MalformedResponse when it is not one."""
    return _fixed_hex(value, what, 66)


def hex_address(value: object, what: str) -> str:
    """A 20-byte address, lower-cased; MalformedResponse when it is not one."""
    return _fixed_hex(value, what, 42)


def _field(raw: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return raw[key]
    except KeyError:
        raise MalformedResponse(f"{what} without {key!r}") from None
    except TypeError:
        raise MalformedResponse(f"{what} is not an object: {raw!r:.80}") from None


# --- logs ------------------------------------------------------------------------------------


def decode_transfer_logs(
    logs: Sequence[Mapping[str, Any]],
    tokens: Container[str],
    timestamps: Mapping[int, int],
    recipients: Iterable[str] | None = None,
) -> DecodeResult:
    """Decode raw ``eth_getLogs`` entries into transfers of the watched ``tokens``.

    ``tokens`` holds lower-case contract addresses; ``timestamps`` maps block number → block
    timestamp for every block the logs name (a missing one raises MalformedResponse).

    ``recipients`` (lower-case addresses), when given, is the hot path's filter: a log that
    :func:`passed_over` lets go (a well-shaped Transfer log to anyone else) is not decoded; a
    zero-value one is still counted as skipped. Every other log is decoded and checked in full,
    so wrong-shaped logs are counted whoever they name. Without them, a batch of well-shaped
    Transfer logs is decoded all at once (:func:`decode_ahead`); with them, log by log, which
    costs least where most logs are passed over (a live scan reads every Transfer).
    """
    if recipients is None and (ahead := decode_ahead(logs, tokens, timestamps)) is not None:
        return ahead.watching(None)
    watched = None if recipients is None else watched_topics(recipients)
    return _decode_each(logs, tokens, timestamps, watched)


@dataclass(frozen=True, slots=True)
class Decoded:
    """Logs decoded before the recipients watched are known (:func:`decode_ahead`): what
    :func:`decode_transfer_logs` makes of them, for any recipients, is :meth:`watching`."""

    logs: Sequence[Mapping[str, Any]]  # those decoded (the very sequence)
    transfers: list[Transfer]  # in block order
    #: each log skipped: its third topic (lower-case), why, and whether its data is zero
    skipped: list[tuple[str, str, bool]]

    def watching(self, watched: Collection[str] | None) -> DecodeResult:
        """:func:`decode_transfer_logs` of the logs, ``watched`` the recipient topics: a log
        :func:`passed_over` would let go (to an address outside them) is dropped, counted only
        when its value is zero."""
        skipped: dict[str, int] = {}
        if watched is None:
            transfers = list(self.transfers)
            for _, reason, _ in self.skipped:
                skipped[reason] = skipped.get(reason, 0) + 1
            return DecodeResult(transfers, skipped)
        paid = {"0x" + topic[26:] for topic in watched if topic.startswith(ADDRESS_TOPIC)}
        transfers = [t for t in self.transfers if t.to_address in paid]
        for recipient, reason, zero in self.skipped:
            if recipient in watched or not recipient.startswith(ADDRESS_TOPIC):
                skipped[reason] = skipped.get(reason, 0) + 1
            elif zero:
                skipped["zero_value"] = skipped.get("zero_value", 0) + 1
        return DecodeResult(transfers, skipped)

    def __add__(self, other: Decoded) -> Decoded:
        """The logs of both, ``other``'s after these; the transfers in block order (two
        reads of consecutive ranges: merged in one pass)."""
        transfers = self.transfers + other.transfers
        transfers.sort(key=_BLOCK_ORDER)
        return Decoded((*self.logs, *other.logs), transfers, self.skipped + other.skipped)


def _decode_each(
    logs: Sequence[Mapping[str, Any]],
    tokens: Container[str],
    timestamps: Mapping[int, int],
    watched: Container[str] | None,
) -> DecodeResult:
    """:func:`decode_transfer_logs`, log by log: what a log of any shape makes, or raises."""
    transfers: list[Transfer] = []
    skipped: dict[str, int] = {}
    checked = Checked()
    for log in logs:
        if watched is not None:
            shortcut = passed_over(log.get("topics"), log.get("data"), watched, checked)
            if shortcut is not None:
                if shortcut:
                    skipped[shortcut] = skipped.get(shortcut, 0) + 1
                continue
        outcome = _decode_log(log, tokens, timestamps, checked)
        if isinstance(outcome, str):
            skipped[outcome] = skipped.get(outcome, 0) + 1
        else:
            transfers.append(outcome)
    transfers.sort(key=_BLOCK_ORDER)
    return DecodeResult(transfers, skipped)


_ZERO_DATA = "0x" + "0" * 64
_BLOCK_ORDER: Final = operator.attrgetter("block_number", "log_index")


def decode_ahead(
    logs: Sequence[Mapping[str, Any]], tokens: Container[str], timestamps: Mapping[int, int]
) -> Decoded | None:
    """The logs decoded for any recipients watched, when they are all Transfer-shaped (three
    topics, 32 bytes of data), every field a string of strict hex, every block timed: each
    field's distinct values are checked together (a few passes of C over them) and converted
    once, then each log is skipped or decoded as :func:`_decode_each` does it. None for
    anything else (a missing field, a value of another type or not hex, a block without its
    time): :func:`decode_transfer_logs` then decodes log by log, and says what is wrong."""
    try:
        rows = [
            (
                log["blockNumber"],
                log["logIndex"],
                log["transactionHash"],
                log["blockHash"],
                log["address"],
                log["topics"],
                log["data"],
                log.get("removed") is True,
            )
            for log in logs
        ]
    except (KeyError, TypeError, AttributeError):
        return None
    if not rows:
        return Decoded(logs, [], [])
    numbers, indexes, txs, blocks, addresses, topics, data, _ = zip(*rows, strict=True)
    if set(map(type, topics)) != {list} or set(map(len, topics)) != {3}:
        return None
    firsts, senders, receivers = zip(*topics, strict=True)
    try:
        quantities = {*numbers, *indexes}
        hashes = {*txs, *blocks, *firsts, *senders, *receivers}
        cased = [hex_case(quantities, 0), hex_case(hashes, 66), hex_case(set(addresses), 42)]
        if None in cased or hex_case(set(data), 66) is None:
            return None
    except TypeError:  # a value no set holds (a list, a dict): of no type a log has
        return None
    value_of = {text: int(text, 16) for text in quantities}
    lower = _lowered(hashes, cased[1]) | _lowered(addresses, cased[2])
    transfers: list[Transfer] = []
    skipped: list[tuple[str, str, bool]] = []
    for number, index, tx, block, address, (first, sender, receiver), value, removed in rows:
        recipient = lower[receiver]
        reason = None
        token = lower[address]
        if removed:
            reason = "removed"
        elif token not in tokens:
            reason = "unknown_token"
        elif (
            lower[first] != TRANSFER_TOPIC
            or lower[sender][2:26] != _ZERO_PAD
            or recipient[2:26] != _ZERO_PAD
        ):
            reason = "topics"
        elif value == _ZERO_DATA or not (amount := int(value, 16)):
            reason = "zero_value"
        if reason is not None:
            skipped.append((recipient, reason, value == _ZERO_DATA))
            continue
        block_number = value_of[number]
        timestamp = timestamps.get(block_number)
        if timestamp is None:
            return None
        transfers.append(
            Transfer(
                token,
                lower[tx],
                value_of[index],
                block_number,
                lower[block],
                timestamp,
                "0x" + lower[sender][26:],
                "0x" + recipient[26:],
                amount,
            )
        )
    transfers.sort(key=_BLOCK_ORDER)
    return Decoded(logs, transfers, skipped)


def hex_case(values: Collection[Any], length: int) -> bool | None:
    """None unless every one of ``values`` is a ``str`` that :func:`strict_hex_int` reads
    (``0x`` and at least one hex digit), of ``length`` characters unless ``length`` is 0;
    else whether any of them has an upper-case digit. A few passes of C over them all."""
    if set(map(type, values)) - {str}:
        return None
    sizes = set(map(len, values))
    if (length and sizes - {length}) or min(sizes, default=3) < 3:
        return None
    text = "".join(values)
    if not text.isascii():
        return None
    if length:
        count = len(text) // length
        prefixed = text[::length] == "0" * count and text[1::length] == "x" * count
    else:
        prefixed = not set(map(_PREFIX, values)) - {"0x"}
    if not prefixed:
        return None
    left = text.encode().translate(None, _LOWER_HEX_OR_X)
    if left.translate(None, _UPPER_HEX) or text.count("x") != len(values):
        return None
    return bool(left)


def _lowered(values: Collection[str], cased: bool | None) -> dict[str, str]:
    """Each of ``values`` to its lower case (to itself when none has an upper-case letter)."""
    return (
        {text: text.lower() for text in values} if cased else dict(zip(values, values, strict=True))
    )


_PREFIX: Final = operator.itemgetter(slice(0, 2))
_LOWER_HEX_OR_X: Final = b"0123456789abcdefx"
_UPPER_HEX: Final = b"ABCDEF"


def recipients_of(logs: Sequence[Mapping[str, Any]]) -> set[str]:
    """The lower-case recipients named by the logs' third topics (no validation: a lookup key)."""
    out: set[str] = set()
    for log in logs:
        topics = log.get("topics")
        if type(topics) is list and len(topics) == 3 and type(topics[2]) is str:
            out.add("0x" + topics[2][26:].lower())
    return out


def pays_one_of(log: Mapping[str, Any], recipients: Container[str]) -> bool:
    """Whether a log of three topics or more names one of ``recipients`` (lower-case addresses)
    as its third (a Transfer's recipient). A third topic that is not 32 bytes of hex raises
    MalformedResponse: it may be a watched address, garbled, and is never passed over."""
    topics = log.get("topics")
    if type(topics) is not list or len(topics) < 3:
        return False
    return "0x" + hex_hash(topics[2], "log topic")[26:] in recipients


def block_ref(log: Mapping[str, Any]) -> BlockRef:
    """The block a raw log names, as the node spelled it: ``(blockNumber, blockHash,
    blockTimestamp)`` (None when it has no ``blockTimestamp``); MalformedResponse without the
    first two."""
    try:
        return log["blockNumber"], log["blockHash"], log.get("blockTimestamp")
    except (KeyError, TypeError, AttributeError):
        raise MalformedResponse(f"log without a block number and hash: {log!r:.80}") from None


def watched_topics(addresses: Iterable[str]) -> frozenset[str]:
    """The recipient topics (32 bytes, lower-case) of lower-case 20-byte hex ``addresses``: the
    keys :func:`passed_over` looks a log's third topic up by, as the node spells it."""
    return frozenset(ADDRESS_TOPIC + address[2:] for address in addresses)


def passed_over(topics: Any, data: Any, watched: Container[str], checked: Checked) -> str | None:
    """The one rule by which a log may be let go undecoded: ``""`` for a well-shaped Transfer
    log to an address outside ``watched`` (recipient topics: :func:`watched_topics`), pass it
    over; ``"zero_value"`` for such a log of value 0 (count it); None to decode it in full.

    Well-shaped: three topics, 32 bytes of data, and a third topic of 32 bytes of hex whose upper
    12 bytes are zero (an address). A third topic that is not hex raises MalformedResponse: it
    might be a watched address, garbled. Any other shape is decoded, and so counted or refused,
    whoever it names. Reads no other field of the log."""
    if type(topics) is not list or len(topics) != 3 or type(data) is not str or len(data) != 66:
        return None
    recipient = topics[2]
    if type(recipient) is not str or len(recipient) != 66:
        return None
    key = checked.topics.get(recipient)
    if key is None:
        key = checked.hash(recipient, "log topic")
    if key in watched or not key.startswith(ADDRESS_TOPIC):
        return None
    return "zero_value" if data == _ZERO_DATA else ""


class Checked:
    """The hex strings one decoding call has already validated, with their values.

    The logs of a range repeat the same block numbers, block hashes, log indexes, transaction
    hashes, token addresses and often holders: each distinct string is checked (and converted)
    once per call instead of once per log. Only successes are remembered, and only exact ``str``
    values, so a malformed value raises exactly as it would without this. ``topics`` (the
    32-byte values checked, lower-cased) may be read directly: a miss is checked by :meth:`hash`.
    """

    __slots__ = ("_addresses", "_quantities", "topics")

    def __init__(self) -> None:
        self._quantities: dict[str, int] = {}
        self.topics: dict[str, str] = {}
        self._addresses: dict[str, str] = {}

    def quantity(self, value: object, what: str) -> int:
        return _memo(self._quantities, hex_quantity, value, what)

    def hash(self, value: object, what: str) -> str:
        return _memo(self.topics, hex_hash, value, what)

    def address(self, value: object, what: str) -> str:
        return _memo(self._addresses, hex_address, value, what)


def _memo(cache: dict[str, T], parse: Callable[[object, str], T], value: object, what: str) -> T:
    if type(value) is not str:
        return parse(value, what)
    found = cache.get(value)
    if found is None:
        found = cache[value] = parse(value, what)
    return found


def _decode_log(
    log: Mapping[str, Any],
    tokens: Container[str],
    timestamps: Mapping[int, int],
    checked: Checked | None = None,
) -> Transfer | str:
    """One log → a Transfer, or the reason it is skipped; raises on a malformed log."""
    checked = Checked() if checked is None else checked
    raw_number, raw_index, raw_tx, raw_block, raw_token, topics, data = _log_fields(log)
    block_number = checked.quantity(raw_number, "log blockNumber")
    log_index = checked.quantity(raw_index, "log logIndex")
    tx_hash = checked.hash(raw_tx, "log transactionHash")
    block_hash = checked.hash(raw_block, "log blockHash")
    token = checked.address(raw_token, "log address")
    if not isinstance(topics, list):
        raise MalformedResponse(f"log topics is not a list: {topics!r:.80}")
    if log.get("removed") is True:
        return "removed"
    if token not in tokens:
        return "unknown_token"
    payload = _transfer_payload(topics, data, checked)
    if isinstance(payload, str):
        return payload
    sender, recipient, value = payload
    timestamp = timestamps.get(block_number)
    if timestamp is None:
        raise MalformedResponse(f"no timestamp for block {block_number}")
    return Transfer(
        token=token,
        tx_hash=tx_hash,
        log_index=log_index,
        block_number=block_number,
        block_hash=block_hash,
        block_timestamp=timestamp,
        from_address=sender,
        to_address=recipient,
        value=value,
    )


_LOG_FIELDS: Final = (
    "blockNumber",
    "logIndex",
    "transactionHash",
    "blockHash",
    "address",
    "topics",
    "data",
)


def _log_fields(log: Mapping[str, Any]) -> tuple[Any, ...]:
    """The fields a Transfer needs, in :data:`_LOG_FIELDS` order; raises when one is missing."""
    try:
        return tuple(log[key] for key in _LOG_FIELDS)
    except KeyError as exc:
        raise MalformedResponse(f"log without {exc.args[0]!r}") from None
    except TypeError:
        raise MalformedResponse(f"log is not an object: {log!r:.80}") from None


def _transfer_payload(
    topics: list[Any], data: object, checked: Checked | None = None
) -> tuple[str, str, int] | str:
    """(from, to, value) of an ERC-20 Transfer's topics and data, or the reason to skip it."""
    checked = Checked() if checked is None else checked
    if len(topics) != 3:
        return "topics"
    signature, sender, recipient = topics
    if signature != TRANSFER_TOPIC and checked.hash(signature, "log topic") != TRANSFER_TOPIC:
        return "topics"
    sender = checked.hash(sender, "log topic")
    recipient = checked.hash(recipient, "log topic")
    if sender[2:26] != _ZERO_PAD or recipient[2:26] != _ZERO_PAD:
        return "topics"  # not an address: the upper 12 bytes of an address topic are zero
    value = strict_hex_int(data)
    if value is None or not isinstance(data, str):
        if data != "0x":  # "0x" is empty data: a log, just not a Transfer
            raise MalformedResponse(f"log data is not hex: {data!r:.80}")
        return "data"
    if len(data) != 66:
        return "data"
    if value == 0:
        return "zero_value"
    return "0x" + sender[26:], "0x" + recipient[26:], value


# --- blocks ----------------------------------------------------------------------------------


def parse_header(block: Mapping[str, Any]) -> Header:
    """A :class:`Header` from a raw ``eth_getBlockByNumber`` result (hashes lower-cased)."""
    return Header(
        number=hex_quantity(_field(block, "number", "block"), "block number"),
        hash=hex_hash(_field(block, "hash", "block"), "block hash"),
        parent_hash=hex_hash(_field(block, "parentHash", "block"), "block parentHash"),
        timestamp=hex_quantity(_field(block, "timestamp", "block"), "block timestamp"),
    )


def native_transfers(
    blocks: Sequence[Mapping[str, Any]],
    watched: Container[str],
) -> list[Transfer]:
    """Native-coin transfers to ``watched`` addresses from raw ``eth_getBlockByNumber(n, true)``.

    Top-level transactions whose ``to`` (lower-cased) is watched and whose value is > 0; contract
    creations (``to`` null) pay nobody. Receipts are the caller's to check (a failed transaction
    pays nothing).
    Sorted by block number, then by position in the block.
    """
    found: list[tuple[int, int, Transfer]] = []
    for block in blocks:
        number = hex_quantity(_field(block, "number", "block"), "block number")
        block_hash = hex_hash(_field(block, "hash", "block"), "block hash")
        timestamp = hex_quantity(_field(block, "timestamp", "block"), "block timestamp")
        txs = _field(block, "transactions", "block")
        if not isinstance(txs, list):
            raise MalformedResponse(f"block {number} transactions is not a list")
        for position, tx in enumerate(txs):
            if not isinstance(tx, Mapping):
                raise MalformedResponse(f"block {number} was fetched without full transactions")
            transfer = _native_transfer(tx, number, block_hash, timestamp, watched)
            if transfer is not None:
                found.append((number, position, transfer))
    found.sort(key=lambda item: (item[0], item[1]))
    return [transfer for _, _, transfer in found]


def _native_transfer(
    tx: Mapping[str, Any],
    number: int,
    block_hash: str,
    timestamp: int,
    watched: Container[str],
) -> Transfer | None:
    to = _field(tx, "to", "transaction")
    if to is None:
        return None
    to_address = hex_address(to, "transaction to")
    if to_address not in watched:
        return None
    value = hex_quantity(_field(tx, "value", "transaction"), "transaction value")
    tx_hash = hex_hash(_field(tx, "hash", "transaction"), "transaction hash")
    if value == 0:
        return None
    return Transfer(
        token=None,
        tx_hash=tx_hash,
        log_index=NATIVE_LOG_INDEX,
        block_number=number,
        block_hash=block_hash,
        block_timestamp=timestamp,
        from_address=hex_address(_field(tx, "from", "transaction"), "transaction from"),
        to_address=to_address,
        value=value,
    )
