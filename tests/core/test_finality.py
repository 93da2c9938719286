from __future__ import annotations

import pytest

from scanner.core.finality import (
    blocks_to_keep,
    credit_confirmations,
    deep_end,
    final_block,
    finality_at,
    is_final,
    timed_blocks,
)
from scanner.core.ledger import credit_confirmations as reexported
from scanner.core.model import Finality
from scanner.core.plan import LIVE, ChainRules, RangeInput
from tests.core.builders import TIMESTAMPS, ts


def blocks(checked: int, required: int) -> Finality:
    return finality_at(checked, required=required, tag_block=None, timestamps=TIMESTAMPS)


def tags(checked: int, tag_block: int | None) -> Finality:
    return finality_at(checked, required=None, tag_block=tag_block, timestamps=TIMESTAMPS)


def test_block_mode() -> None:
    f = blocks(100, 12)
    assert f == Finality(checked=100, final_block=89, final_timestamp=ts(89), required=12)
    assert is_final(89, f)
    assert not is_final(90, f)
    assert credit_confirmations(89, f) == 12
    assert credit_confirmations(100, f) == 1


def test_block_mode_ignores_a_tag() -> None:
    assert finality_at(100, required=12, tag_block=95, timestamps=TIMESTAMPS) == blocks(100, 12)


def test_block_mode_early_in_the_chain_has_no_final_timestamp() -> None:
    f = blocks(3, 12)
    assert (f.final_block, f.final_timestamp) == (-8, None)
    assert not is_final(0, f)


def test_tag_mode_is_capped_at_the_checked_block() -> None:
    assert tags(100, 95) == Finality(100, 95, ts(95), None)
    assert tags(100, 120) == Finality(100, 100, ts(100), None)


def test_tag_mode_without_a_tag_block_has_nothing_final() -> None:
    f = tags(100, None)
    assert (f.final_block, f.final_timestamp) == (-1, None)
    assert not is_final(0, f)


def test_confirmations_never_go_below_zero() -> None:
    f = blocks(100, 3)
    assert credit_confirmations(101, f) == 0
    assert credit_confirmations(150, f) == 0


def test_block_mode_counts_up_to_required_only() -> None:
    """A final transfer shows the required count, whatever batch made it final."""
    assert credit_confirmations(50, blocks(100, 3)) == 3
    assert credit_confirmations(50, tags(100, 95)) == 51


def test_required_must_be_positive() -> None:
    with pytest.raises(ValueError):
        blocks(100, 0)


def test_chain_rules_use_the_same_function() -> None:
    rules = ChainRules("x", required=12, tag=None, grace=300, reorg_depth=64)
    assert rules.finality(100, None, TIMESTAMPS) == blocks(100, 12)
    tagged = ChainRules("x", required=None, tag="finalized", grace=300, reorg_depth=64)
    assert tagged.finality(100, 95, TIMESTAMPS) == tags(100, 95)


def test_blocks_kept_cover_the_walk_back_and_the_final_block() -> None:
    assert blocks_to_keep(64, 12) == 64 + 12 + 8
    assert blocks_to_keep(64, None) == 64 + 8


def test_ledger_reexports_the_helpers() -> None:
    assert reexported is credit_confirmations


# -- the blocks a range far below the head reads the times of --------------------------------


def test_timed_blocks_in_block_mode_name_each_transfer_and_its_final_block() -> None:
    # transfer b: b and b - 3 (final when b - 1 was checked); end: end - 3 + 1 .. end (the
    # final blocks of the next range's first blocks)
    assert timed_blocks([10, 15], 20, 3) == {10, 7, 15, 12, 18, 19, 20}


def test_timed_blocks_without_transfers_name_the_end_and_the_blocks_to_its_final_block() -> None:
    assert timed_blocks([], 20, 3) == {18, 19, 20}
    assert timed_blocks([], 20, 1) == {20}


def test_timed_blocks_never_name_a_block_below_zero() -> None:
    assert timed_blocks([0, 1], 2, 5) == {0, 1, 2}


def test_timed_blocks_in_tag_mode_name_the_block_before_each_transfer() -> None:
    assert timed_blocks([10, 15], 20, None) == {9, 10, 14, 15, 20}


@pytest.mark.parametrize("required", [1, 3, 12, None])
def test_timed_blocks_hold_every_final_block_the_plan_reads(required: int | None) -> None:
    """What plan_range asks: the final block as of each transfer's block - 1, and as of the
    end (a tag far above a range far below the head)."""
    transfers, end = [100, 101, 107, 119], 120

    def final(checked: int) -> int:
        return final_block(checked, required=required, tag_block=10**9)

    named = timed_blocks(transfers, end, required)
    assert {final(b - 1) for b in transfers} | {final(end), end, *transfers} <= named


def test_deep_ranges_end_below_the_reorg_window_and_in_tag_mode_at_the_tag() -> None:
    assert deep_end(1_000, 64, tag_mode=False, tag_block=None) == 936
    assert deep_end(1_000, 128, tag_mode=True, tag_block=950) == 872  # the window is lower
    assert deep_end(1_000, 32, tag_mode=True, tag_block=900) == 900  # the tag is lower
    assert deep_end(1_000, 32, tag_mode=True, tag_block=None) == -1  # no tag yet: none deep


def _input(unswept: tuple[int, int | None] | None) -> RangeInput:
    rules = ChainRules("eth", required=3, tag=None, grace=0, reorg_depth=8)
    times = {n: 1_000 + 10 * n for n in range(30)}
    return RangeInput(rules, LIVE, 21, 20, 20, None, times, (), (), (), {}, unswept=unswept)


def test_an_expiry_is_judged_only_as_far_as_the_sweep_has_read() -> None:
    # final block 18 (time 1180); the sweep has read through 15: expiries are judged by block
    # 16's time (every block at or before it in time is swept), never by the final block's
    assert _input(None).finality().final_timestamp == 1_180
    assert _input((16, 1_160)).finality().final_timestamp == 1_160
    assert _input((16, None)).finality().final_timestamp is None  # its time unknown: wait
    assert _input((19, 1_190)).finality().final_timestamp == 1_180  # swept past the final block
    capped = _input((16, 1_160)).finality()
    assert (capped.final_block, capped.checked) == (18, 20)  # confirmations count as before
