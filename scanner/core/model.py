"""The core's value types: frozen structs with no behaviour beyond a key.

They are ``msgspec.Struct`` classes (``frozen=True``): as immutable as frozen dataclasses, made
ten times faster (a backfill makes several per credit), and with ``gc=False``, never tracked
by the cyclic garbage collector (they hold strings, numbers and other such values, never a
reference back to themselves). ``msgspec.structs.replace`` makes a changed copy.

Conventions, the same everywhere in the core:

- addresses and hashes are lower-case ``0x``-hex strings;
- token values are integers in base units (never floats, never Decimals);
- ``token`` is the token contract's address, or ``None`` for the chain's native coin;
- times are unix seconds, UTC; block times are the chain's, never the wall clock's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, NotRequired, TypedDict
from uuid import UUID

import msgspec

Status = Literal["pending", "confirming", "confirmed", "expired"]

#: The states the scanner owns. Any other status in ``payments`` (``cancelled``, ``refunded``,
#: …) is the gateway's word: final, never changed; funds that arrive are still recorded.
SCANNER_STATES: Final[frozenset[str]] = frozenset({"pending", "confirming", "confirmed", "expired"})

#: States the ledger moves a payment out of; every other status is final.
OPEN_STATES: Final[frozenset[str]] = frozenset({"pending", "confirming"})

#: The scanner's final states (the gateway acts on them).
FINAL_STATES: Final[frozenset[Status]] = frozenset({"confirmed", "expired"})

#: ``log_index`` of a native-coin transfer (a transaction makes at most one).
NATIVE_LOG_INDEX: Final = -1


class Log(TypedDict):
    """One ``eth_getLogs`` entry as the node spelled it, its shape checked at the edge
    (:mod:`scanner.chain.shapes`): every field a string of the JSON-RPC kind (``0x``-hex; block
    number, block hash, log index and address already parsed once), ``topics`` a list of strings.
    The core decodes the rest (topics, data, the transaction hash) where a Transfer needs them."""

    blockNumber: str
    blockHash: str
    logIndex: str
    transactionHash: str
    address: str
    topics: list[str]
    data: str
    removed: NotRequired[bool]
    blockTimestamp: NotRequired[str]


#: A block as logs name it, the node's spelling: ``(blockNumber, blockHash, blockTimestamp)``
#: (the last None when the node does not send it).
BlockRef = tuple[str, str, str | None]


class PassedOver(msgspec.Struct, frozen=True, gc=False):
    """The logs of a range passed over as they were read, unread beyond their shape: each a
    well-shaped Transfer log to no watched recipient (:func:`~scanner.core.decode.passed_over`).
    ``count`` them, ``blocks`` the blocks they name (once per run of logs of one block: the
    reorg checks compare every log's block hash, these included), ``zero_value`` those of value
    0 (counted as skipped, as a decoded one would be)."""

    count: int = 0
    blocks: tuple[BlockRef, ...] = ()
    zero_value: int = 0

    def __add__(self, other: PassedOver) -> PassedOver:
        return PassedOver(
            self.count + other.count, self.blocks + other.blocks, self.zero_value + other.zero_value
        )


class Header(msgspec.Struct, frozen=True, gc=False):
    """A block header, as far as reorg checks and expiry need it."""

    number: int
    hash: str
    parent_hash: str
    timestamp: int


class Transfer(msgspec.Struct, frozen=True, gc=False):
    """One decoded ERC-20 Transfer log, or one native-coin transaction (``log_index`` -1)."""

    token: str | None
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    block_timestamp: int
    from_address: str
    to_address: str
    value: int

    @property
    def key(self) -> tuple[str, int]:
        """The transfer's identity across reorgs and rescans: ``(tx_hash, log_index)``."""
        return (self.tx_hash, self.log_index)


class Payment(msgspec.Struct, frozen=True, gc=False):
    """A payment the gateway is waiting for; ``amount`` in base units (> 0).

    ``status`` is the row's: one of :data:`SCANNER_STATES`, or the gateway's own (final)."""

    id: UUID
    token: str | None
    address: str
    amount: int
    status: str
    created_at: float
    expires_at: float


class Credit(msgspec.Struct, frozen=True, gc=False):
    """One row of ``transactions`` attached to a payment.

    ``late``: mined after the payment's ``expires_at`` (by block timestamp); never counted.
    ``orphaned``: its block was dropped by a reorg; never counted.
    ``final``: stored as final (``transactions.status = 'confirmed'``) by an earlier batch; a
    rescan with an older checked block (a backfill, a rewind) does not count it down again.
    ``foreign``: of another token than the payment's (the gateway switched the payment's token
    after it arrived): recorded, never counted.
    ``verified``: a second provider (``verify_urls``) confirmed it, in this block.
    """

    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    block_timestamp: int
    value: int
    late: bool
    orphaned: bool
    final: bool = False
    foreign: bool = False
    verified: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return (self.tx_hash, self.log_index)

    @property
    def counted(self) -> bool:
        """Whether the credit counts towards ``amount_received``."""
        return not (self.late or self.orphaned or self.foreign)


class Finality(msgspec.Struct, frozen=True, gc=False):
    """What is final as of the newest hash-checked block.

    ``checked``: the newest hash-checked block (the cursor; a backfill's max(cursor, verified)).
    ``final_block``: the highest final block number (block mode ``checked - required + 1``; tag
    mode ``min(tag, checked)``); may be negative early in a chain's life.
    ``final_timestamp``: timestamp of ``final_block`` when known; ``None`` means no expiry decision.
    ``required``: the required confirmations, ``None`` in tag mode.
    ``verify``: the chain has ``verify_urls``: a credit is final only once a second provider
    agreed with it (``Credit.verified``), however deep its block.
    """

    checked: int
    final_block: int
    final_timestamp: int | None
    required: int | None
    verify: bool = False


class Event(msgspec.Struct, frozen=True, gc=False):
    """One row for ``payment_events``; ``data`` is JSON-safe (str, int, bool values)."""

    payment_id: UUID
    type: str
    status_from: Status | None
    status_to: Status | None
    data: Mapping[str, object]


class PaymentOutcome(msgspec.Struct, frozen=True, gc=False):
    """The columns of a ``payments`` row that the scanner owns (``status`` only while it is one
    of :data:`SCANNER_STATES`: a gateway's status is written back unchanged)."""

    status: str
    amount_received: int
    confirmations: int
    detected_in_block: int | None
