from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.core import decode as decoding
from scanner.core.amounts import normalize_address, parse_payment_fields, to_amount, to_base_units
from scanner.core.decode import (
    TRANSFER_TOPIC,
    DecodeResult,
    decode_transfer_logs,
    native_transfers,
    parse_header,
    recipients_of,
    watched_topics,
)
from scanner.core.model import Header, Transfer
from scanner.errors import MalformedResponse
from tests.chain.test_sift import TOKEN as SIFT_TOKEN
from tests.chain.test_sift import WATCHED as SIFT_WATCHED
from tests.chain.test_sift import logs as sift_logs

TOKEN = "0x" + "a0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
OTHER_TOKEN = "0x" + "11" * 20
FROM = "0x" + "12" * 20
TO = "0x" + "34" * 20
TIMESTAMPS = {100: 1_700_000_000, 101: 1_700_000_012}
UINT256_MAX = 2**256 - 1


def topic(address: str) -> str:
    return "0x" + "0" * 24 + address[2:]


def word(value: int) -> str:
    return "0x" + format(value, "064x")


def raw_log(**overrides: Any) -> dict[str, Any]:
    log: dict[str, Any] = {
        "address": TOKEN,
        "topics": [TRANSFER_TOPIC, topic(FROM), topic(TO)],
        "data": word(25_000_000),
        "blockNumber": "0x64",
        "blockHash": "0x" + "ab" * 32,
        "transactionHash": "0x" + "cd" * 32,
        "transactionIndex": "0x3",
        "logIndex": "0x7",
        "removed": False,
    }
    log.update(overrides)
    return log


def decode(*logs: dict[str, Any]) -> tuple[list[Transfer], dict[str, int]]:
    result = decode_transfer_logs(list(logs), {TOKEN}, TIMESTAMPS)
    return result.transfers, result.skipped


class TestDecodeTransferLogs:
    def test_a_transfer(self) -> None:
        transfers, skipped = decode(raw_log())
        assert skipped == {}
        assert transfers == [
            Transfer(
                token=TOKEN,
                tx_hash="0x" + "cd" * 32,
                log_index=7,
                block_number=100,
                block_hash="0x" + "ab" * 32,
                block_timestamp=1_700_000_000,
                from_address=FROM,
                to_address=TO,
                value=25_000_000,
            )
        ]
        assert transfers[0].key == ("0x" + "cd" * 32, 7)

    def test_upper_case_hex_is_lower_cased(self) -> None:
        log = raw_log(
            address="0x" + TOKEN[2:].upper(),
            topics=[
                TRANSFER_TOPIC.replace("d", "D")[:2] + TRANSFER_TOPIC[2:].upper(),
                topic(FROM).upper().replace("0X", "0x"),
                "0x" + topic(TO)[2:].upper(),
            ],
            blockHash="0x" + "AB" * 32,
            transactionHash="0x" + "CD" * 32,
            data="0x" + format(255, "064X"),
        )
        (transfer,), _ = decode(log)
        assert transfer.token == TOKEN
        assert transfer.block_hash == "0x" + "ab" * 32
        assert transfer.tx_hash == "0x" + "cd" * 32
        assert (transfer.from_address, transfer.to_address) == (FROM, TO)
        assert transfer.value == 255

    def test_uint256_max_value_is_exact(self) -> None:
        (transfer,), _ = decode(raw_log(data=word(UINT256_MAX)))
        assert transfer.value == UINT256_MAX

    def test_four_topics_is_skipped(self) -> None:  # ERC-721 shaped
        log = raw_log(topics=[TRANSFER_TOPIC, topic(FROM), topic(TO), word(5)], data="0x")
        assert decode(log) == ([], {"topics": 1})

    def test_two_topics_is_skipped(self) -> None:
        assert decode(raw_log(topics=[TRANSFER_TOPIC, topic(FROM)])) == ([], {"topics": 1})

    def test_other_event_signature_is_skipped(self) -> None:
        log = raw_log(topics=[word(1), topic(FROM), topic(TO)])
        assert decode(log) == ([], {"topics": 1})

    @pytest.mark.parametrize("which", [1, 2])
    def test_dirty_upper_bytes_are_skipped(self, which: int) -> None:
        topics = [TRANSFER_TOPIC, topic(FROM), topic(TO)]
        topics[which] = "0x" + "00" * 11 + "01" + topics[which][26:]
        assert decode(raw_log(topics=topics)) == ([], {"topics": 1})

    def test_sixty_four_byte_data_is_skipped(self) -> None:
        log = raw_log(data=word(5) + word(6)[2:])
        assert decode(log) == ([], {"data": 1})

    @pytest.mark.parametrize("data", ["0x", "0x" + "00" * 31 + "05"[:1]])
    def test_short_data_is_skipped(self, data: str) -> None:
        assert decode(raw_log(data=data)) == ([], {"data": 1})

    def test_zero_value_is_skipped(self) -> None:
        assert decode(raw_log(data=word(0))) == ([], {"zero_value": 1})

    def test_unknown_token_is_skipped(self) -> None:
        assert decode(raw_log(address=OTHER_TOKEN)) == ([], {"unknown_token": 1})

    def test_removed_log_is_skipped(self) -> None:
        assert decode(raw_log(removed=True)) == ([], {"removed": 1})

    def test_removed_absent_is_fine(self) -> None:
        log = raw_log()
        del log["removed"]
        assert len(decode(log)[0]) == 1

    def test_skips_are_counted_by_reason(self) -> None:
        logs = [raw_log(data=word(0)), raw_log(data=word(0)), raw_log(removed=True), raw_log()]
        transfers, skipped = decode(*logs)
        assert len(transfers) == 1
        assert skipped == {"zero_value": 2, "removed": 1}

    def test_sorted_by_block_and_log_index(self) -> None:
        logs = [
            raw_log(blockNumber="0x65", logIndex="0x0", transactionHash=word(1)),
            raw_log(blockNumber="0x64", logIndex="0xa", transactionHash=word(2)),
            raw_log(blockNumber="0x64", logIndex="0x2", transactionHash=word(3)),
        ]
        transfers, _ = decode(*logs)
        assert [(t.block_number, t.log_index) for t in transfers] == [(100, 2), (100, 10), (101, 0)]
        assert transfers[2].block_timestamp == 1_700_000_012

    @pytest.mark.parametrize(
        "field",
        ["blockNumber", "transactionHash", "logIndex", "topics", "blockHash", "address", "data"],
    )
    def test_missing_field_raises(self, field: str) -> None:
        log = raw_log()
        del log[field]
        with pytest.raises(MalformedResponse):
            decode(log)

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("blockNumber", "100"),
            ("blockNumber", 100),
            ("blockNumber", None),  # a pending log
            ("blockNumber", "0x"),
            ("blockNumber", "0xzz"),
            ("blockNumber", "-0x1"),
            ("blockNumber", "0x 1"),
            ("blockNumber", "0x_1"),
            ("logIndex", "0x1g"),
            ("transactionHash", "0x" + "cd" * 31),
            ("transactionHash", "0x" + "zz" * 32),
            ("blockHash", None),
            ("address", "0x1234"),
            ("topics", "not a list"),
            ("topics", [TRANSFER_TOPIC, topic(FROM), "0x1234"]),
            ("topics", [TRANSFER_TOPIC, "0x" + "g" * 64, topic(TO)]),
            ("data", "0x" + "zz" * 32),
            ("data", None),
        ],
    )
    def test_malformed_log_raises(self, field: str, value: object) -> None:
        with pytest.raises(MalformedResponse):
            decode(raw_log(**{field: value}))

    def test_not_an_object_raises(self) -> None:
        with pytest.raises(MalformedResponse):
            decode_transfer_logs(["0x1234"], {TOKEN}, TIMESTAMPS)  # type: ignore[list-item]

    def test_missing_timestamp_raises(self) -> None:
        with pytest.raises(MalformedResponse):
            decode(raw_log(blockNumber="0x66"))


def raw_tx(**overrides: Any) -> dict[str, Any]:
    tx: dict[str, Any] = {
        "hash": "0x" + "ee" * 32,
        "from": "0x" + FROM[2:].upper(),
        "to": "0x" + TO[2:].upper(),
        "value": hex(10**18),
        "transactionIndex": "0x0",
    }
    tx.update(overrides)
    return tx


def raw_block(number: int, *txs: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": hex(number),
        "hash": "0x" + format(number, "064x"),
        "parentHash": "0x" + format(number - 1, "064x"),
        "timestamp": hex(TIMESTAMPS[number]),
        "transactions": list(txs),
    }


class TestNativeTransfers:
    def test_a_native_transfer(self) -> None:
        (transfer,) = native_transfers([raw_block(100, raw_tx())], {TO})
        assert transfer == Transfer(
            token=None,
            tx_hash="0x" + "ee" * 32,
            log_index=-1,
            block_number=100,
            block_hash="0x" + format(100, "064x"),
            block_timestamp=TIMESTAMPS[100],
            from_address=FROM,
            to_address=TO,
            value=10**18,
        )

    def test_filters(self) -> None:
        txs = [
            raw_tx(hash=word(1), to="0x" + "99" * 20),  # not watched
            raw_tx(hash=word(2), value="0x0"),  # no value
            raw_tx(hash=word(3), to=None),  # contract creation
            raw_tx(hash=word(5)),
        ]
        found = native_transfers([raw_block(100, *txs)], {TO})
        assert [t.tx_hash for t in found] == [word(5)]

    def test_order_by_block_then_position(self) -> None:
        blocks = [
            raw_block(101, raw_tx(hash=word(1))),
            raw_block(100, raw_tx(hash=word(2)), raw_tx(hash=word(3))),
        ]
        found = native_transfers(blocks, {TO})
        assert [t.tx_hash for t in found] == [word(2), word(3), word(1)]

    def test_block_without_full_transactions_raises(self) -> None:
        block = raw_block(100)
        block["transactions"] = [word(1)]
        with pytest.raises(MalformedResponse):
            native_transfers([block], {TO})

    @pytest.mark.parametrize("field", ["number", "hash", "timestamp", "transactions"])
    def test_malformed_block_raises(self, field: str) -> None:
        block = raw_block(100, raw_tx())
        del block[field]
        with pytest.raises(MalformedResponse):
            native_transfers([block], {TO})

    def test_malformed_watched_tx_raises(self) -> None:
        with pytest.raises(MalformedResponse):
            native_transfers([raw_block(100, raw_tx(value="ten"))], {TO})

    def test_parse_header(self) -> None:
        block = raw_block(100)
        block["hash"] = "0x" + "AB" * 32
        assert parse_header(block) == Header(
            100, "0x" + "ab" * 32, "0x" + format(99, "064x"), TIMESTAMPS[100]
        )


class TestAmounts:
    def test_to_amount(self) -> None:
        assert to_amount(25_500_000, 6) == Decimal("25.5")
        assert to_amount(1, 18) == Decimal("0.000000000000000001")
        assert str(to_amount(UINT256_MAX, 18)).replace(".", "") == str(UINT256_MAX)
        assert str(to_amount(UINT256_MAX, 0)) == str(UINT256_MAX)

    def test_to_base_units(self) -> None:
        assert to_base_units(Decimal("25.5"), 6) == 25_500_000
        assert to_base_units(Decimal("25.500000000"), 6) == 25_500_000  # trailing zeros are fine
        assert to_base_units(Decimal("1.000000000000000001"), 18) == 10**18 + 1
        assert to_base_units(Decimal("0"), 6) == 0
        assert to_base_units(Decimal("2.5E+3"), 0) == 2500

    def test_round_trip_of_uint256_max(self) -> None:
        assert to_base_units(to_amount(UINT256_MAX, 18), 18) == UINT256_MAX

    @pytest.mark.parametrize(
        "amount",
        ["1.0000001", "-1", "NaN", "Infinity", "1E-999999999", "1E+100", str(2**256)],
    )
    def test_to_base_units_rejects(self, amount: str) -> None:
        with pytest.raises(ValueError):
            to_base_units(Decimal(amount), 6 if amount != str(2**256) else 0)

    @pytest.mark.parametrize(
        "amount", ["1" * 2000, "1" * 5000, "1E+" + "9" * 18, "-1E+999999999", "0E-999999999"]
    )
    def test_an_amount_beyond_any_token_is_refused_in_a_short_message(self, amount: str) -> None:
        with pytest.raises(ValueError, match="out of range") as refused:
            to_base_units(Decimal(amount), 6)
        assert len(str(refused.value)) < 100

    def test_parse_payment_fields(self) -> None:
        assert parse_payment_fields("0x" + TO[2:].upper(), Decimal("25.5"), 6) == (TO, 25_500_000)
        with pytest.raises(ValueError, match="20 bytes"):
            parse_payment_fields("0x1234", Decimal("1"), 6)
        with pytest.raises(ValueError, match="decimal places"):
            parse_payment_fields(TO, Decimal("1.0000001"), 6)
        with pytest.raises(ValueError, match="not positive"):
            parse_payment_fields(TO, Decimal("0"), 6)


class TestNormalizeAddress:
    def test_checksummed(self) -> None:
        checksummed = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
        assert normalize_address(checksummed) == TOKEN

    def test_upper_case(self) -> None:
        assert normalize_address("0X" + TOKEN[2:].upper()) == TOKEN

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "0x",
            "0x1234",
            TOKEN + "00",
            TOKEN[2:],
            "0x" + "g" * 40,
            " " + TOKEN[1:],
            "0x" + "\u0661" * 40,  # ARABIC-INDIC DIGIT ONE: int() would take it
        ],
    )
    def test_invalid(self, text: str) -> None:
        assert normalize_address(text) is None


class TestRecipientFilter:
    """The hot path decodes only logs to watched recipients; wrong shapes are always counted."""

    WATCHED = "0x" + "56" * 20

    def run(self, *logs: dict[str, Any]) -> tuple[list[Transfer], dict[str, int]]:
        result = decode_transfer_logs(list(logs), {TOKEN}, TIMESTAMPS, recipients={self.WATCHED})
        return result.transfers, result.skipped

    def test_only_logs_to_watched_recipients_are_decoded(self) -> None:
        ours = raw_log(topics=[TRANSFER_TOPIC, topic(FROM), topic(self.WATCHED.upper())])
        transfers, skipped = self.run(raw_log(), ours)
        assert [t.to_address for t in transfers] == [self.WATCHED]
        assert skipped == {}

    def test_wrong_shapes_and_zero_values_are_counted_for_anyone(self) -> None:
        four_topics = raw_log(topics=[TRANSFER_TOPIC, topic(FROM), topic(TO), word(1)], data="0x")
        long_data = raw_log(data=word(1) + "00" * 32)
        zero = raw_log(data=word(0))
        transfers, skipped = self.run(four_topics, long_data, zero)
        assert transfers == []
        assert skipped == {"topics": 1, "data": 1, "zero_value": 1}

    def test_recipients_of_names_the_third_topics_lower_case(self) -> None:
        logs = [raw_log(topics=[TRANSFER_TOPIC, topic(FROM), topic("0x" + "AB" * 20)])]
        assert recipients_of(logs) == {"0x" + "ab" * 20}

    @pytest.mark.parametrize("who", ["0x" + "56" * 20, TO])
    def test_a_recipient_topic_that_is_no_address_is_counted_whoever_it_names(
        self, who: str
    ) -> None:
        """Upper 12 bytes not zero: not an address, so not a transfer to anyone; skipped and
        counted as a wrong shape, as without the filter, never passed over unseen."""
        dirty = raw_log(topics=[TRANSFER_TOPIC, topic(FROM), "0x" + "01" + "0" * 22 + who[2:]])
        assert self.run(dirty) == ([], {"topics": 1})


def _outcome(
    decode: Callable[[], DecodeResult],
) -> tuple[list[Transfer], dict[str, int]] | type[Exception]:
    try:
        result = decode()
    except MalformedResponse:
        return MalformedResponse
    return result.transfers, result.skipped


def _among(clean: list[dict[str, Any]], odd: tuple[int, dict[str, Any]] | None) -> list[Any]:
    if odd is None:
        return clean
    return [*clean[: odd[0]], odd[1], *clean[odd[0] :]]


def _upper(text: str) -> str:
    return "0x" + text[2:].upper()


@st.composite
def well_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """A Transfer-shaped log of strict hex: to anyone or to no address, of any value, any
    letter case, removed or not, of the token or not, in a block with a time or not."""
    recipient = draw(st.sampled_from([*SIFT_WATCHED, FROM, TO]))
    number = draw(st.sampled_from([7, 8]))
    return raw_log(
        address=draw(st.sampled_from([SIFT_TOKEN, _upper(SIFT_TOKEN), OTHER_TOKEN])),
        topics=[
            draw(st.sampled_from([TRANSFER_TOPIC, _upper(TRANSFER_TOPIC), word(9)])),
            draw(st.sampled_from([topic(FROM), "0x01" + topic(FROM)[4:]])),
            draw(
                st.sampled_from(
                    [topic(recipient), _upper(topic(recipient)), "0x01" + topic(recipient)[4:]]
                )
            ),
        ],
        data=draw(st.sampled_from([word(5), word(0), word(2**256 - 1), _upper(word(2**255))])),
        blockNumber=hex(number),
        blockHash=draw(st.sampled_from(["0x" + f"{number:02x}" * 32, _upper(word(number))])),
        transactionHash=draw(st.sampled_from(["0x" + "cd" * 32, "0x" + "Ef" * 32])),
        logIndex=hex(draw(st.integers(0, 3))),
        removed=draw(st.sampled_from([False, True, None])),
    )


@settings(max_examples=500, deadline=None, database=None)
@given(
    answer=st.tuples(
        st.lists(well_shaped(), max_size=12),
        st.none() | st.tuples(st.integers(0, 12), sift_logs()),  # one log of any shape
    ).map(lambda drawn: _among(*drawn)),
    watching=st.booleans(),
    every_time=st.booleans(),
    cut=st.integers(0, 13),
)
def test_logs_checked_all_at_once_decode_as_each_log_alone_does(
    answer: list[dict[str, Any]], watching: bool, every_time: bool, cut: int
) -> None:
    """A batch is checked field by field across its logs when it can be, and never decodes to
    anything else than each log decoded alone: the same transfers, the same counts, the same
    errors, whatever is malformed, missing, upper-case or of another type."""
    times: Mapping[int, int] = {7: 100} if every_time else {8: 100}
    recipients = SIFT_WATCHED if watching else None
    watched = None if recipients is None else watched_topics(recipients)
    whole = _outcome(lambda: decode_transfer_logs(answer, {SIFT_TOKEN}, times, recipients))
    each = _outcome(lambda: decoding._decode_each(answer, {SIFT_TOKEN}, times, watched))
    assert whole == each
    # two reads decoded ahead, each before the recipients are known, then joined
    first, second = (
        decoding.decode_ahead(part, {SIFT_TOKEN}, times) for part in (answer[:cut], answer[cut:])
    )
    if first is not None and second is not None:
        joined = first + second
        assert list(joined.logs) == answer
        assert _outcome(lambda: joined.watching(watched)) == each


def test_a_batch_of_well_shaped_logs_is_checked_all_at_once_and_anything_else_log_by_log() -> None:
    upper = raw_log(transactionHash="0x" + "AB" * 32, address=TOKEN.upper().replace("0X", "0x"))
    clean = [
        raw_log(),
        upper,
        raw_log(data=word(0)),
        raw_log(removed=True),
        raw_log(logIndex="0x2"),
    ]
    ahead = decoding.decode_ahead(clean, {TOKEN}, TIMESTAMPS)
    assert ahead is not None and ahead.logs is clean
    at_once = ahead.watching(None)
    assert at_once == decoding._decode_each(clean, {TOKEN}, TIMESTAMPS, None)
    assert len(at_once.transfers) == 3
    assert [t.log_index for t in at_once.transfers] == [2, 7, 7]
    assert at_once.transfers[2].tx_hash == "0x" + "ab" * 32  # lower-cased
    assert {t.token for t in at_once.transfers} == {TOKEN}
    assert at_once.skipped == {"zero_value": 1, "removed": 1}
    for odd in (
        raw_log(blockNumber="0x_64"),
        raw_log(blockNumber=100),
        raw_log(topics=(TRANSFER_TOPIC, topic(FROM), topic(TO))),
        raw_log(topics=[TRANSFER_TOPIC, topic(FROM)]),
        raw_log(data="0x"),
        raw_log(data=word(1) + "00"),
        raw_log(blockHash="0x" + "\u0661" * 64),
        raw_log(address="0X" + TOKEN[2:]),
        raw_log(blockNumber="0x99"),  # a block without its time
        {k: v for k, v in raw_log().items() if k != "logIndex"},
    ):
        assert decoding.decode_ahead([raw_log(), odd], {TOKEN}, TIMESTAMPS) is None
