"""TRON addresses as users write them, and as the node's JSON-RPC wants them.

A TRON account is 21 bytes: ``0x41`` then the 20 bytes an EVM address has. Wallets, explorers
and gateways show it in base58check (``T…``: the 21 bytes and the first 4 bytes of their double
sha256, in Bitcoin's base58 alphabet); java-tron's HTTP API takes it as 42 hex digits
(``41…``); its JSON-RPC takes and gives the 20-byte hex (``0x…``: ``JsonRpcApiUtil.
addressToByteArray`` refuses the other forms in a log filter). The scanner matches on the
20-byte hex and shows base58.
"""

from __future__ import annotations

import hashlib

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
PREFIX = 0x41
_HEX = frozenset("0123456789abcdef")


class TronAddressError(ValueError):
    """Not a TRON address in any of its written forms (the message says why)."""


def _checksum(payload: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def to_base58(hex20: str) -> str:
    """``0x`` + 40 hex digits → ``T…``."""
    raw = bytes([PREFIX]) + bytes.fromhex(hex20.removeprefix("0x"))
    data = raw + _checksum(raw)
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = ALPHABET[digit] + out
    leading = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading + out


def _from_base58(text: str) -> str:
    if len(text) != 34 or any(c not in _INDEX for c in text):
        raise TronAddressError(f"not a base58 TRON address: {text[:48]!r}")
    number = 0
    for char in text:
        number = number * 58 + _INDEX[char]
    data = number.to_bytes(25, "big")
    payload, check = data[:21], data[21:]
    if payload[0] != PREFIX:
        raise TronAddressError(f"not a TRON address (version byte {payload[0]:#04x}): {text!r}")
    if _checksum(payload) != check:
        raise TronAddressError(f"bad checksum in TRON address {text!r}")
    return "0x" + payload[1:].hex()


def to_hex(text: str) -> str:
    """Any written form (``T…``, ``41…`` with 42 hex digits, ``0x…`` with 40) → ``0x`` + 40
    lower-case hex digits; :class:`TronAddressError` otherwise."""
    value = text.strip()
    if value.startswith("T"):
        return _from_base58(value)
    lowered = value.lower()
    digits = lowered.removeprefix("0x")
    if set(digits) <= _HEX:
        if len(digits) == 42 and digits.startswith("41") and not lowered.startswith("0x"):
            return "0x" + digits[2:]
        if len(digits) == 40 and lowered.startswith("0x"):
            return "0x" + digits
    raise TronAddressError(f"not a TRON address (T…, 41… or 0x…): {value[:48]!r}")
