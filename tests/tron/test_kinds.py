"""A chain's kind in the configuration and the rules it brings (:mod:`scanner.core.kinds`),
each with the java-tron source it follows."""

from __future__ import annotations

import pytest

from scanner.config import FileSettings
from scanner.core.kinds import EVM, TRON
from scanner.errors import ConfigError
from scanner.scan.tokens import parse_token
from scanner.testkit.settings import settings_from
from tests.tron.conftest import USDT, USDT_HEX, tron_settings

URL = "http://127.0.0.1:1/jsonrpc"


def test_tron_is_final_at_the_solidified_block_by_default() -> None:
    # DposService.updateSolidBlock / Wallet.getByJsonBlockId: "finalized" is the solidified block
    chain = tron_settings(URL)
    assert (chain.finality, chain.confirmations) == ("finalized", None)
    assert tron_settings(URL, confirmations=19).finality is None


def test_safe_is_a_configuration_error_on_tron() -> None:
    # java-tron 4.8.2 docs json-rpc/index.md: -32602 "TAG safe not supported"
    with pytest.raises(ValueError, match="'safe' is not answered by a tron node"):
        tron_settings(URL, finality="safe")
    with pytest.raises(ValueError):  # TAG_PENDING_SUPPORT_ERROR: pending is no finality either
        tron_settings(URL, finality="pending")


def test_a_tron_token_may_be_written_in_base58_and_is_kept_as_written() -> None:
    # JsonRpcApiUtil.addressToByteArray takes 20-byte hex; wallets show base58check
    chain = tron_settings(URL)
    assert chain.tokens[0].address == USDT
    assert TRON.parse_address(USDT) == USDT_HEX
    assert TRON.parse_address("41" + USDT_HEX[2:]) == USDT_HEX


def test_a_bad_checksum_in_a_configured_token_is_refused() -> None:
    broken = USDT[:-1] + "u"
    with pytest.raises(ValueError, match="checksum"):
        tron_settings(URL, tokens=[{"symbol": "USDT", "address": broken, "decimals": 6}])


def test_the_same_tron_token_in_two_spellings_is_listed_twice() -> None:
    tokens = [
        {"symbol": "USDT", "address": USDT, "decimals": 6},
        {"symbol": "USDT2", "address": USDT_HEX, "decimals": 6},
    ]
    with pytest.raises(ValueError, match="listed twice"):
        tron_settings(URL, tokens=tokens)


def test_an_evm_chain_refuses_tron_addresses() -> None:
    data = {
        "chains": [
            {
                "name": "eth",
                "chain_id": 1,
                "rpc_urls": [URL],
                "confirmations": 3,
                "tokens": [{"symbol": "USDT", "address": USDT, "decimals": 6}],
            }
        ]
    }
    with pytest.raises(ValueError, match="20 bytes of hex"):
        FileSettings.model_validate(data)


def test_a_tron_token_row_with_a_bad_checksum_is_token_invalid() -> None:
    row = ("8f8f8f8f-0000-4000-8000-000000000001", USDT[:-1] + "u", "USDT", 6, True)
    with pytest.raises(ValueError, match="checksum"):
        parse_token(row, TRON)
    assert parse_token((*row[:1], USDT, *row[2:]), TRON).info.address == USDT_HEX
    with pytest.raises(ValueError, match="20 bytes of hex"):
        parse_token((*row[:1], USDT, *row[2:]), EVM)


def test_every_spelling_of_a_recipient_is_looked_up() -> None:
    # the index is on lower(address): each written form, lower-cased
    forms = set(TRON.lookup_forms({USDT_HEX}))
    assert forms == {USDT_HEX, "41" + USDT_HEX[2:], USDT.lower()}
    addresses = {USDT_HEX}
    assert EVM.lookup_forms(addresses) is addresses  # EVM: nothing more to look up


def test_tron_addresses_are_shown_in_base58() -> None:
    assert TRON.show(USDT_HEX) == USDT
    assert EVM.show(USDT_HEX) == USDT_HEX


def test_unknown_kind_is_a_configuration_error(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "c.toml"
    path.write_text(
        '[[chains]]\nname = "x"\nkind = "solana"\nchain_id = 1\nrpc_urls = ["http://h"]\n'
        "confirmations = 1\n"
    )
    with pytest.raises(ConfigError, match="kind"):
        settings_from("sqlite://", SCANNER_CONFIG=str(path))
