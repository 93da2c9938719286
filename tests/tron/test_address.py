"""TRON's written address forms against known pairs (USDT's contract on mainnet, as TronScan
and java-tron's HTTP API show it)."""

from __future__ import annotations

import pytest

from scanner.core.tron_address import TronAddressError, to_base58, to_hex

USDT_BASE58 = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
USDT_HEX = "0xa614f803b6fd780986a42c78ec9c7f77e6ded13c"


@pytest.mark.parametrize(
    "written",
    [
        USDT_BASE58,
        "41a614f803b6fd780986a42c78ec9c7f77e6ded13c",
        USDT_HEX,
        USDT_HEX.upper()[:2].lower() + USDT_HEX[2:].upper(),
    ],
)
def test_every_written_form_is_the_same_20_bytes(written: str) -> None:
    assert to_hex(written) == USDT_HEX


def test_base58_round_trip() -> None:
    assert to_base58(USDT_HEX) == USDT_BASE58
    assert to_base58("0x" + "00" * 20) == "T9yD14Nj9j7xAB4dbGeiX9h8unkKHxuWwb"  # the zero account


@pytest.mark.parametrize(
    "bad",
    [
        USDT_BASE58[:-1] + "u",  # a checksum that does not hold
        USDT_BASE58[:-1],  # too short
        "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj60",  # 0 is no base58 digit
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",  # a Bitcoin address: another version byte
        "42a614f803b6fd780986a42c78ec9c7f77e6ded13c",
        "a614f803b6fd780986a42c78ec9c7f77e6ded13c",
        "0xa614",
        "",
    ],
)
def test_anything_else_is_a_clear_error(bad: str) -> None:
    with pytest.raises(TronAddressError):
        to_hex(bad)
