"""Sifting an ``eth_getLogs`` answer as it is parsed (``shapes.sifted``): the logs kept, decoded,
give exactly what decoding every log against the watched recipients gives (the same transfers,
the same skipped counts, the same errors), and a log is passed over only when it is a
well-shaped Transfer to nobody watched, whatever the node sends."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NotRequired, get_origin, get_type_hints

import msgspec
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scanner.chain import shapes
from scanner.core.decode import TRANSFER_TOPIC, decode_transfer_logs, hex_case, watched_topics
from scanner.core.model import Log, PassedOver, Transfer
from scanner.errors import MalformedResponse
from tests.chain.test_reader_validation import fake_reader

TOKEN = "0x" + "11" * 20
OTHER_TOKEN = "0x" + "12" * 20
SENDER = "0x" + "00" * 12 + "22" * 20
WATCHED = ["0x" + "a1" * 20, "0x" + "b2" * 20]
NOBODY = ["0x" + "c3" * 20, "0x" + "d4" * 20]
SIEVE = watched_topics(WATCHED)
PAD = "0x" + "00" * 12


def topic(address: str) -> str:
    return PAD + address[2:]


def word(value: int) -> str:
    return "0x" + format(value, "064x")


class _AnyTime(Mapping[int, int]):
    def __getitem__(self, key: int) -> int:
        return 100

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


def fail(why: str) -> MalformedResponse:
    return MalformedResponse(f"eth_getLogs: {why}")


def log(**fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "address": TOKEN,
        "topics": [TRANSFER_TOPIC, SENDER, topic(NOBODY[0])],
        "data": word(5),
        "blockNumber": "0x7",
        "blockHash": "0x" + "07" * 32,
        "blockTimestamp": "0x64",
        "transactionHash": "0x" + "ab" * 32,
        "logIndex": "0x0",
        "removed": False,
    }
    entry.update(fields)
    return {k: v for k, v in entry.items() if v is not _GONE}


_GONE = object()

# a log's third topic: an address topic (watched or not, any letter case), or not quite one
RECIPIENTS = st.sampled_from(
    WATCHED + NOBODY
).flatmap(
    lambda a: st.sampled_from(
        [
            topic(a),
            topic(a).upper().replace("0X", "0x"),
            "0x" + "01" + "00" * 11 + a[2:],  # upper 12 bytes not zero
            PAD + a[2:-2] + "zz",  # not hex
            PAD + a[2:-2] + "\u0661\u0661",  # digits int() reads, not ASCII
            PAD + a[2:-2] + "_1",  # an underscore int() skips
            topic(a)[:-1] + " ",  # a space int() strips
            topic(a)[:-2],  # 31 bytes
            "0X" + topic(a)[2:],
        ]
    )
)
DATA = st.sampled_from([word(5), word(0), word(2**256 - 1), "0x", word(1) + "00" * 32, "0xzz"])
BLOCKS = st.sampled_from(
    [("0x7", "0x" + "07" * 32), ("0x8", "0x" + "08" * 32), ("0x8", "0x" + "f8" * 32)]
)


@st.composite
def logs(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.sampled_from([3, 3, 3, 3, 2, 4]))
    topics = [TRANSFER_TOPIC, SENDER, draw(RECIPIENTS), word(1)][:count]
    number, block_hash = draw(BLOCKS)
    entry = log(
        topics=topics,
        data=draw(DATA),
        address=draw(st.sampled_from([TOKEN, TOKEN, OTHER_TOKEN])),
        blockNumber=number,
        blockHash=block_hash,
        blockTimestamp=draw(st.sampled_from(["0x64", _GONE])),
        logIndex=hex(draw(st.integers(0, 3))),
        removed=draw(st.sampled_from([False, _GONE, True])),
    )
    broken = draw(st.sampled_from([None] * 12 + ["data", "topics", "transactionHash", "removed"]))
    if broken is not None:  # a field gone, or of another JSON type
        entry[broken] = draw(st.sampled_from([_GONE, 7, None, ["x"]]))
        entry = {k: v for k, v in entry.items() if v is not _GONE}
    return entry


def reference(answer: list[Any]) -> tuple[list[Transfer], dict[str, int]] | type[Exception]:
    """What the scan made of an answer before sifting: every log checked, then decoded against
    the watched recipients (a well-shaped Transfer to anyone else passed over)."""
    try:
        found = shapes.logs(answer, fail)
        result = decode_transfer_logs(found, {TOKEN}, _AnyTime(), recipients=WATCHED)
    except MalformedResponse:
        return MalformedResponse
    return result.transfers, result.skipped


def sifted(answer: list[Any]) -> tuple[list[Transfer], dict[str, int]] | type[Exception]:
    """The same answer sifted as it is parsed, then its kept logs decoded as the scan does."""
    try:
        kept, passed = shapes.sifted(answer, fail, SIEVE)
        result = decode_transfer_logs(kept, {TOKEN}, _AnyTime(), recipients=WATCHED)
    except MalformedResponse:
        return MalformedResponse
    assert len(kept) + passed.count == len(answer)
    skipped = dict(result.skipped)
    if passed.zero_value:
        skipped["zero_value"] = skipped.get("zero_value", 0) + passed.zero_value
    return result.transfers, skipped


def as_read(answer: list[Any]) -> list[Any]:
    """The answer as the reader takes it from the node's bytes: its logs typed where the
    answer has the types of logs, else the plain JSON (``shapes.typed_answers``)."""
    body = orjson.dumps(
        [
            {"jsonrpc": "2.0", "id": 1, "result": answer},
            {"jsonrpc": "2.0", "id": 2, "result": "0x10"},
        ]
    )
    typed = shapes.typed_answers(body)
    return answer if typed is None else typed[0]["result"]


def both_ways(answer: list[Any]) -> tuple[list[Transfer], dict[str, int]] | type[Exception]:
    """:func:`sifted` of the answer as JSON and as the reader decodes it, which agree."""
    plain, read = sifted(answer), sifted(as_read(answer))
    assert read == plain
    if plain is not MalformedResponse:
        assert (
            shapes.sifted(as_read(answer), fail, SIEVE)[1] == shapes.sifted(answer, fail, SIEVE)[1]
        )
    return plain


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(logs(), max_size=12))
@example([log(topics=[TRANSFER_TOPIC, SENDER, topic(WATCHED[0]).upper().replace("0X", "0x")])])
@example([log(), log(topics=[TRANSFER_TOPIC, SENDER, PAD + "zz" * 20])])
@example([log(), log(blockTimestamp=None)])
@example([log(), log(blockNumber="0x_7")])
def test_sifting_gives_what_decoding_every_log_gives(answer: list[dict[str, Any]]) -> None:
    assert both_ways(answer) == reference(answer)


def test_a_typed_log_has_the_fields_of_a_log_and_the_same_ones_optional() -> None:
    """The typed decoding and the checks of the plain path take the one shape of a log
    (``scanner.core.model.Log``): a field added to one and not the other fails here."""
    fields = msgspec.structs.fields(shapes.TypedLog)
    declared = get_type_hints(Log, include_extras=True)
    assert {f.name for f in fields} == declared.keys()
    optional = {name for name, kind in declared.items() if get_origin(kind) is NotRequired}
    assert {f.name for f in fields if not f.required} == optional == {"removed", "blockTimestamp"}


def test_an_answer_with_a_field_of_another_type_is_read_as_plain_json() -> None:
    """The typed decoding takes only logs of a log's JSON types; any other answer is handed
    on as JSON, and the checks of the plain path refuse it, naming the log."""
    answer = [log(), log(logIndex=1)]
    assert as_read(answer) is answer
    with pytest.raises(MalformedResponse, match="log 1: logIndex is not a string"):
        shapes.sifted(as_read(answer), fail, SIEVE)
    assert all(type(e) is shapes.TypedLog for e in as_read([log(), log()]))


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(logs(), max_size=12))
def test_no_transfer_to_a_watched_address_is_passed_over(answer: list[dict[str, Any]]) -> None:
    """Whatever else the answer holds, every log that decodes to a transfer to a watched
    address is kept, and every log passed over names its block among the blocks kept."""
    try:
        kept, passed = shapes.sifted(answer, fail, SIEVE)
        every = decode_transfer_logs(answer, {TOKEN}, _AnyTime()).transfers
    except MalformedResponse:
        return  # the answer is refused (the test above: as it was before sifting)
    ours = decode_transfer_logs(kept, {TOKEN}, _AnyTime()).transfers
    assert [t for t in every if t.to_address in WATCHED] == [
        t for t in ours if t.to_address in WATCHED
    ]
    kept_ids = {id(entry) for entry in kept}
    named = {(e["blockNumber"], e["blockHash"]) for e in answer if id(e) not in kept_ids}
    assert named == {(n, h) for n, h, _ in passed.blocks}


@st.composite
def transfers(draw: st.DrawFn) -> dict[str, Any]:
    """A Transfer-shaped log (three topics, a word of data), to an address topic nearly
    always: the answers the sieve takes a field at a time."""
    number, block_hash = draw(BLOCKS)
    recipient = draw(st.sampled_from([topic(a) for a in WATCHED + NOBODY] * 6) | RECIPIENTS)
    return log(
        topics=[TRANSFER_TOPIC, SENDER, recipient],
        data=draw(st.sampled_from([word(5), word(0), word(2**256 - 1)])),
        blockNumber=number,
        blockHash=block_hash,
        blockTimestamp=draw(st.sampled_from(["0x64", "0x64", _GONE])),
        logIndex=hex(draw(st.integers(0, 3))),
    )


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(transfers(), max_size=30))
@example([log(topics=[TRANSFER_TOPIC, SENDER, topic(WATCHED[1])]), log()])
@example([log(), log(blockNumber="0x8", blockHash="0x" + "08" * 32), log()])
def test_an_answer_of_transfers_alone_is_sifted_as_each_log_would_be(
    answer: list[dict[str, Any]],
) -> None:
    """The sieve's pass a field at a time gives what decoding each log gives, and names the
    blocks of the logs it passed over once per run of them, in order, with their times."""
    assert both_ways(answer) == reference(answer)
    try:
        kept, passed = shapes.sifted(answer, fail, SIEVE)
    except MalformedResponse:
        return
    kept_ids = {id(entry) for entry in kept}
    runs: list[tuple[str, str, str | None]] = []
    for entry in answer:
        ref = (entry["blockNumber"], entry["blockHash"], entry.get("blockTimestamp"))
        if id(entry) not in kept_ids and (not runs or runs[-1][:2] != ref[:2]):
            runs.append(ref)
    assert passed.blocks == tuple(runs)
    assert passed.count == len(answer) - len(kept)


def test_a_well_shaped_transfer_to_nobody_watched_is_passed_over_and_counted() -> None:
    zero = log(data=word(0), logIndex="0x1")
    ours = log(topics=[TRANSFER_TOPIC, SENDER, topic(WATCHED[0])], logIndex="0x2")
    later = log(blockNumber="0x8", blockHash="0x" + "08" * 32, blockTimestamp=_GONE)
    kept, passed = shapes.sifted([log(), zero, ours, later], fail, SIEVE)
    assert kept == [ours]
    assert passed == PassedOver(
        3, (("0x7", "0x" + "07" * 32, "0x64"), ("0x8", "0x" + "08" * 32, None)), 1
    )


@pytest.mark.parametrize(
    "third",
    [
        topic(WATCHED[0]).upper().replace("0X", "0x"),  # a watched address in capitals
        "0x" + "01" + "00" * 11 + WATCHED[0][2:],  # not an address: decoded, and skipped
        "0x" + "01" + "00" * 11 + NOBODY[0][2:],
        topic(NOBODY[0])[:-2],  # 31 bytes
    ],
)
def test_a_log_that_is_not_plainly_to_someone_else_is_kept(third: str) -> None:
    entry = log(topics=[TRANSFER_TOPIC, SENDER, third])
    kept, passed = shapes.sifted([log(), entry], fail, SIEVE)
    assert kept == [entry] and passed.count == 1


@pytest.mark.parametrize(
    "third",
    [
        PAD + "zz" * 20,
        PAD + "11" * 19 + "\u0661\u0661",
        PAD + "11" * 19 + "_1",
        PAD + "11" * 19 + "1 ",
    ],
)
async def test_a_garbled_recipient_of_a_log_to_nobody_watched_is_refused(third: str) -> None:
    """Through the reader: the answer is malformed (not retried as a log to skip)."""
    answer = [log(), log(topics=[TRANSFER_TOPIC, SENDER, third], logIndex="0x1")]

    def node(method: str, params: list[Any]) -> Any:
        return "0x100000" if method == "eth_blockNumber" else answer

    async with fake_reader(node) as reader:
        with pytest.raises(MalformedResponse, match=r"eth_getLogs.*log 1.*log topic"):
            await reader.sifted_logs([TOKEN], TRANSFER_TOPIC, 1, 10, watched=SIEVE)


@pytest.mark.parametrize(
    ("field", "value"),
    [("transactionHash", 7), ("data", None), ("topics", "x"), ("blockNumber", _GONE)],
)
def test_a_log_of_the_wrong_shape_is_refused_whoever_it_pays(field: str, value: Any) -> None:
    with pytest.raises(MalformedResponse, match="log 1"):
        shapes.sifted([log(), log(**{field: value})], fail, SIEVE)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.sets(st.text(alphabet="0xXaAfFgG9_ \u0661", min_size=0, max_size=6), max_size=4),
    st.sampled_from([0, 3, 4]),
)
@example({"0x1a", "0xFf", "0x0"}, 0)
@example({"0xab", "0x"}, 0)
@example({"0xab", "0xxa"}, 4)
def test_the_values_an_answer_repeats_are_hex_as_each_one_is(values: set[str], length: int) -> None:
    """The typed path checks each field's distinct values at once; it says what checking
    each value alone says."""
    each = all(shapes._hex_of(v, length) for v in values)
    assert (hex_case(values, length) is not None) == each
    if each:  # and whether any has an upper-case digit
        assert hex_case(values, length) == any(v != v.lower() for v in values)
    assert hex_case([*values, 7], length) is None  # a value that is no string


_BODY = orjson.dumps(
    [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "result": [
                log(),
                log(topics=[TRANSFER_TOPIC, SENDER, topic(WATCHED[0])], logIndex="0x1"),
                log(data=word(0), blockNumber="0x8", blockHash="0x" + "08" * 32),
            ],
        },
        {"jsonrpc": "2.0", "id": 2, "result": "0x10"},
    ]
)
_BYTES = b'[]{}",:0x1aAfFz \\u-eE.9nultrsf'
_LOG_KEYS = ("blockNumber", "blockHash", "logIndex", "transactionHash", "address", "topics", "data")


def _seen(answers: Any) -> object:
    """What the sieve makes of a batch's first answer, as the scan uses it (the fields it
    reads, whether a log is removed), or that it is refused."""
    try:
        first = answers[0]["result"]
        kept, passed = shapes.sifted(first, fail, SIEVE)
    except (MalformedResponse, KeyError, IndexError, TypeError):
        return "refused"
    fields = [
        ([e.get(k) for k in _LOG_KEYS], e.get("blockTimestamp"), e.get("removed") is True)
        for e in kept
    ]
    return fields, passed


@settings(max_examples=400, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(_BODY) - 1),
            st.sampled_from(["set", "cut", "add"]),
            st.binary(min_size=1, max_size=4).map(
                lambda b: bytes(_BYTES[x % len(_BYTES)] for x in b)
            ),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_a_garbled_answer_is_read_typed_as_it_is_read_plain(
    edits: list[tuple[int, str, bytes]],
) -> None:
    """The node's bytes garbled anywhere: the typed decoding takes an answer only when plain
    JSON takes it too, and the sieve then keeps, passes over or refuses what it would have
    from the plain JSON."""
    body = bytearray(_BODY)
    for at, how, piece in edits:
        at = min(at, len(body) - 1)
        if how == "set":
            body[at : at + len(piece)] = piece
        elif how == "cut":
            del body[at : at + len(piece)]
        else:
            body[at:at] = piece
    typed = shapes.typed_answers(bytes(body))
    if typed is None:
        return
    plain = orjson.loads(bytes(body))  # raises (a failure) if typed took what JSON refuses
    assert _seen(typed) == _seen(plain)
