"""``fetch.joined``: reads committed together are one range, exactly what each read said."""

from __future__ import annotations

from dataclasses import replace
from typing import cast

import pytest

from scanner.core.decode import TRANSFER_TOPIC, decode_transfer_logs, watched_topics
from scanner.core.model import Header, Log, PassedOver
from scanner.errors import RangeInconsistent
from scanner.scan.batch import verify_links
from scanner.scan.fetch import RangeData, joined
from tests.core.builders import block_hash


def header(n: int, variant: int = 0) -> Header:
    return Header(n, block_hash(n, variant), block_hash(n - 1), 1_000 + 12 * n)


def log(n: int, index: int) -> Log:
    return Log(
        blockNumber=hex(n),
        blockHash=block_hash(n),
        logIndex=hex(index),
        transactionHash="0x" + f"{n:02x}{index:02x}" * 16,
        address="0x" + "ab" * 20,
        topics=[],
        data="0x",
    )


def dense(start: int, end: int) -> RangeData:
    return RangeData(start, end, tuple(header(n) for n in range(start, end + 1)), (log(start, 0),))


def deep(start: int, end: int, headers: list[int], logs: list[int]) -> RangeData:
    return RangeData(
        start,
        end,
        tuple(header(n) for n in headers),
        tuple(log(n, 1) for n in logs),
        times={n: 1_000 + 12 * n for n in logs},
        log_hashes={n: block_hash(n) for n in logs},
    )


def test_two_dense_reads_join_into_one_dense_range() -> None:
    both = joined(dense(10, 12), dense(13, 15))
    assert (both.start, both.end, both.dense) == (10, 15, True)
    assert [h.number for h in both.headers] == list(range(10, 16))
    assert both.logs == (log(10, 0), log(13, 0))
    assert both.last == header(15)


def test_two_deep_reads_join_with_each_block_named_once() -> None:
    # the second read names block 9 too (the final block of its first transfer's block)
    both = joined(deep(0, 10, [3, 9, 10], [3]), deep(11, 20, [9, 14, 20], [14]))
    assert (both.start, both.end, both.dense) == (0, 20, False)
    assert [h.number for h in both.headers] == [3, 9, 10, 14, 20]
    assert both.times == {3: 1_036, 14: 1_168}
    assert both.log_hashes == {3: block_hash(3), 14: block_hash(14)}
    assert both.last.number == 20


def test_two_reads_naming_a_block_by_different_headers_are_read_again() -> None:
    second = deep(11, 20, [14, 20], [14])
    second = RangeData(
        11, 20, (header(9, variant=1), *second.headers), second.logs,
        times=second.times, log_hashes=second.log_hashes,
    )  # fmt: skip
    with pytest.raises(RangeInconsistent):
        joined(deep(0, 10, [9, 10], []), second)


@pytest.mark.parametrize(
    ("first", "second"),
    [(dense(10, 12), dense(14, 15)), (dense(10, 12), deep(13, 20, [20], []))],
)
def test_reads_that_do_not_follow_each_other_or_differ_in_kind_do_not_join(
    first: RangeData, second: RangeData
) -> None:
    with pytest.raises(ValueError, match="do not join"):
        joined(first, second)


def passed(n: int, count: int, variant: int = 0) -> PassedOver:
    """``count`` logs of block ``n`` passed over unread, the block named by ``variant``."""
    return PassedOver(count, ((hex(n), block_hash(n, variant), None),), 1)


def test_logs_passed_over_are_counted_and_their_blocks_checked_like_the_logs_kept() -> None:
    """A log passed over (no watched recipient) that names another hash than its block's
    header: the node answered for another view of the chain, and the range is read again."""
    first = replace(dense(10, 12), passed=passed(11, 5))
    second = replace(dense(13, 15), passed=passed(14, 2))
    both = joined(first, second)
    assert (both.read, both.passed.count, both.passed.zero_value) == (9, 7, 2)
    verify_links(both, None)
    forked = replace(second, passed=passed(14, 2, variant=1))
    with pytest.raises(RangeInconsistent):
        verify_links(joined(first, forked), None)
    deep_forked = replace(deep(13, 20, [13, 20], [14]), passed=passed(14, 1, variant=1))
    with pytest.raises(RangeInconsistent):
        verify_links(deep_forked, None)


TOKEN = "0x" + "ab" * 20


def transfer_log(n: int, index: int, to: str) -> Log:
    return replace_log(
        log(n, index),
        topics=[TRANSFER_TOPIC, "0x" + "00" * 12 + "11" * 20, "0x" + "00" * 12 + to[2:]],
        data="0x" + format(1_000 + index, "064x"),
    )


def replace_log(entry: Log, **fields: object) -> Log:
    return cast(Log, {**entry, **fields})


def paying(start: int, end: int, to: str) -> RangeData:
    logs = tuple(transfer_log(n, 1, to) for n in range(start, end + 1))
    return replace(deep(start, end, [start, end], []), logs=logs, times=_times(start, end))


def _times(start: int, end: int) -> dict[int, int]:
    return {n: 1_000 + 12 * n for n in range(start, end + 1)}


def test_reads_decoded_ahead_join_into_what_their_logs_decode_to() -> None:
    """A backfill decodes each read as it comes in; joined, the reads' decodings are one, and
    give what decoding the joined logs at the commit gives, for any recipients watched."""
    a, b = "0x" + "a1" * 20, "0x" + "b2" * 20
    first, second = paying(0, 3, a).decoded_ahead({TOKEN}), paying(4, 6, b).decoded_ahead({TOKEN})
    both = joined(first, second)
    ahead = both.decoded()
    assert ahead is not None and ahead.logs is both.logs
    for recipients in ([a], [b], [a, b], []):
        expected = decode_transfer_logs(both.logs, {TOKEN}, both.timestamps, recipients)
        assert ahead.watching(watched_topics(recipients)) == expected
    assert len(ahead.watching(watched_topics([a])).transfers) == 4
    # a read with no log between them (most, when few addresses are asked for)
    quiet = replace(deep(7, 9, [7, 9], []), times=_times(7, 9)).decoded_ahead({TOKEN})
    three = joined(both, quiet)
    ahead_three = three.decoded()
    assert ahead_three is not None and len(ahead_three.transfers) == 7
    assert ahead_three.watching(watched_topics([a, b])) == decode_transfer_logs(
        three.logs, {TOKEN}, three.timestamps, [a, b]
    )


def test_logs_changed_after_they_were_decoded_ahead_are_decoded_again() -> None:
    """A read whose logs are replaced after it was decoded (another provider's receipts
    adding one) is decoded at the commit, never by what its first logs decoded to; a read
    not decoded ahead makes a join that is not either."""
    read = paying(0, 3, "0x" + "a1" * 20).decoded_ahead({TOKEN})
    assert read.decoded() is not None
    assert replace(read, logs=read.logs[:1]).decoded() is None
    assert joined(read, paying(4, 6, "0x" + "b2" * 20)).decoded() is None
