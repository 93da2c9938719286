"""What a chain's *kind* changes, in one place: the rest of the pipeline asks a :class:`ChainKind`.

``evm`` is every Ethereum-like chain. ``tron`` is TRON through java-tron's Ethereum-compatible
JSON-RPC (``/jsonrpc``), whose differences are read from java-tron 4.8.1's code and 4.8.2's
documentation:

- addresses: users write ``T…`` (base58check), ``41…`` or ``0x…``; the JSON-RPC speaks 20-byte
  hex only (``JsonRpcApiUtil.addressToByteArray``), so rows are matched on that and shown in
  base58 (:mod:`scanner.core.tron_address`);
- finality: the ``finalized`` tag is the solidified block (``Wallet.getByJsonBlockId``,
  ``DposService.updateSolidBlock``), the default; ``safe`` and ``pending`` are refused by the
  node (``-32602 TAG safe not supported``, ``TAG pending not supported``), so they are a
  configuration error here;
- no native coin: a TRX transfer and a TRC-10 one look alike over JSON-RPC (a transaction
  ``value`` with no log), so a payment with no token is ``invalid_payment``;
- ``eth_getLogs`` spans at most 5,000 blocks (``LogFilterWrapper``, ``maxBlockRange``), a
  JSON-RPC batch holds at most 100 requests (v4.8.2 release notes, item 8);
- an empty ``eth_getLogs`` answer is not trusted (java-tron #4447, #6037, #6384: logs missing
  from the bloom index are still in the receipts).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from scanner.core.amounts import normalize_address
from scanner.core.tron_address import TronAddressError, to_base58, to_hex

KINDS: Final = ("evm", "tron")


@dataclass(frozen=True, slots=True)
class ChainKind:
    """The rules of one kind of chain (:data:`EVM`, :data:`TRON`)."""

    name: str
    native_reason: str | None = None  # why a payment with no token cannot be followed
    default_finality: str | None = None  # when neither confirmations nor finality is set
    refused_tags: frozenset[str] = frozenset()  # finality tags the node does not answer
    max_log_range: int | None = None  # blocks in one eth_getLogs (inclusive span + 1)
    max_batch: int | None = None  # requests in one JSON-RPC batch
    cross_check_empty_logs: bool = False  # read receipts when eth_getLogs says nothing
    case_sensitive: bool = False  # a written address's letter case matters (base58)

    @property
    def native(self) -> bool:
        """Whether native-coin payments are followed on this kind."""
        return self.native_reason is None

    def parse_address(self, text: str) -> str:
        """A written address → ``0x`` + 40 lower-case hex digits; ValueError with the reason."""
        found = normalize_address(text) if isinstance(text, str) else None
        if found is None:
            raise ValueError(f"address {text!r:.60} is not 20 bytes of hex")
        return found

    def match_key(self, text: str) -> str | None:
        """What a stored address is matched as (None: it cannot match anything)."""
        return text.lower()

    def match_keys(self, addresses: Iterable[str]) -> set[str]:
        """The match keys of stored ``addresses`` (those that can match something)."""
        return set(map(str.lower, addresses))

    @property
    def row_parser(self) -> Callable[[str], str] | None:
        """The parser of a payment row's address; None: the EVM default (20-byte hex)."""
        return None

    def lookup_forms(self, addresses: Collection[str]) -> Collection[str]:
        """The lower-case spellings of ``addresses`` (hex) a row may hold, for the index."""
        return addresses

    def show(self, address: str) -> str:
        """A hex address as users of this kind read it."""
        return address


@dataclass(frozen=True, slots=True)
class TronKind(ChainKind):
    """TRON: addresses in three spellings, shown as base58."""

    def parse_address(self, text: str) -> str:
        if not isinstance(text, str):
            raise ValueError(f"address {text!r:.60} is not text")
        try:
            return _tron_hex(text)
        except TronAddressError as exc:
            raise ValueError(str(exc)) from None

    def match_key(self, text: str) -> str | None:
        try:
            return _tron_hex(text)
        except TronAddressError:
            return None

    def match_keys(self, addresses: Iterable[str]) -> set[str]:
        keys = (self.match_key(a) for a in addresses)
        return {k for k in keys if k is not None}

    @property
    def row_parser(self) -> Callable[[str], str] | None:
        return self.parse_address

    def lookup_forms(self, addresses: Collection[str]) -> Collection[str]:
        out: set[str] = set()
        for address in addresses:
            out.update(_forms(address))
        return out

    def show(self, address: str) -> str:
        return _shown(address)


@lru_cache(maxsize=65536)  # every range looks at the same addresses again
def _tron_hex(text: str) -> str:
    return to_hex(text)


@lru_cache(maxsize=65536)
def _shown(address: str) -> str:
    try:
        return to_base58(to_hex(address))
    except (TronAddressError, ValueError):
        return address


@lru_cache(maxsize=65536)
def _forms(address: str) -> tuple[str, ...]:
    """``0x…``, ``41…`` and base58, lower-cased (the index is on ``lower(address)``)."""
    hex20 = address.lower()
    try:
        base58 = to_base58(hex20)
    except ValueError:  # not hex: it matches nothing, but is looked up as given
        return (hex20,)
    return hex20, "41" + hex20[2:], base58.lower()


EVM: Final = ChainKind("evm")
TRON: Final = TronKind(
    "tron",
    native_reason=(
        "native TRX payments are not supported: over JSON-RPC a TRX transfer cannot be told"
        " from a TRC-10 one (java-tron shows both as a transaction value with no log)"
    ),
    default_finality="finalized",
    refused_tags=frozenset({"safe", "pending"}),
    max_log_range=5_000,
    max_batch=100,
    cross_check_empty_logs=True,
    case_sensitive=True,
)
_BY_NAME: Final = {kind.name: kind for kind in (EVM, TRON)}


def kind_of(name: str) -> ChainKind:
    """The kind named ``name`` (``evm``, ``tron``); KeyError for another."""
    return _BY_NAME[name]
