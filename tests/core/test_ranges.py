from __future__ import annotations

import pytest

from scanner.core.ranges import GROW_AFTER, RangeSizer, split_range


class TestSplitRange:
    def test_even_split(self) -> None:
        assert split_range(1, 6, 2) == [(1, 2), (3, 4), (5, 6)]

    def test_last_piece_is_short(self) -> None:
        assert split_range(10, 14, 2) == [(10, 11), (12, 13), (14, 14)]

    def test_size_larger_than_range(self) -> None:
        assert split_range(5, 7, 100) == [(5, 7)]

    def test_single_block(self) -> None:
        assert split_range(5, 5, 3) == [(5, 5)]

    def test_empty(self) -> None:
        assert split_range(6, 5, 3) == []

    def test_pieces_cover_the_range_exactly(self) -> None:
        pieces = split_range(3, 100, 7)
        blocks = [n for lo, hi in pieces for n in range(lo, hi + 1)]
        assert blocks == list(range(3, 101))

    def test_size_must_be_positive(self) -> None:
        with pytest.raises(ValueError):
            split_range(1, 2, 0)


class TestRangeSizer:
    def test_starts_at_the_ceiling(self) -> None:
        assert RangeSizer(1000).size == 1000

    def test_shrink_halves(self) -> None:
        sizer = RangeSizer(1000)
        assert sizer.shrink() == 500
        assert sizer.shrink() == 250
        assert sizer.size == 250

    def test_shrink_takes_a_smaller_suggestion(self) -> None:
        sizer = RangeSizer(1000)
        assert sizer.shrink(suggested=100) == 100

    def test_shrink_takes_a_suggestion_between_half_and_size(self) -> None:
        assert RangeSizer(1000).shrink(suggested=800) == 800

    def test_shrink_ignores_a_suggestion_that_does_not_shrink(self) -> None:
        assert RangeSizer(1000).shrink(suggested=5000) == 500

    def test_floor_is_one(self) -> None:
        sizer = RangeSizer(3)
        for _ in range(5):
            sizer.shrink()
        assert sizer.size == 1
        assert sizer.shrink(suggested=0) == 1
        assert sizer.shrink(suggested=-5) == 1

    def test_grows_back_after_consecutive_successes(self) -> None:
        sizer = RangeSizer(1000)
        sizer.shrink()
        sizer.shrink()  # 250
        for _ in range(GROW_AFTER - 1):
            assert sizer.succeeded() == 250
        assert sizer.succeeded() == 500
        for _ in range(GROW_AFTER):
            sizer.succeeded()
        assert sizer.size == 1000
        for _ in range(GROW_AFTER * 3):
            sizer.succeeded()
        assert sizer.size == 1000  # capped at the ceiling

    def test_growth_is_capped_at_the_ceiling_from_an_odd_size(self) -> None:
        sizer = RangeSizer(10)
        sizer.shrink(suggested=7)
        for _ in range(GROW_AFTER):
            sizer.succeeded()
        assert sizer.size == 10

    def test_a_failure_resets_the_success_count(self) -> None:
        sizer = RangeSizer(1000)
        sizer.shrink()  # 500
        for _ in range(GROW_AFTER - 1):
            sizer.succeeded()
        sizer.shrink()  # 250, count reset
        for _ in range(GROW_AFTER - 1):
            sizer.succeeded()
        assert sizer.size == 250
        assert sizer.succeeded() == 500

    def test_a_refusal_shrinks_relative_to_the_refused_size(self) -> None:
        sizer = RangeSizer(1000)
        assert sizer.shrink(refused=300) == 150  # a short tail range was refused
        assert sizer.shrink(suggested=100, refused=150) == 100

    def test_concurrent_refusals_of_one_cap_shrink_once(self) -> None:
        sizer = RangeSizer(1000)
        for _ in range(4):  # four reads of 1000 blocks in flight, all refused
            sizer.shrink(refused=1000)
        assert sizer.size == 500
        for _ in range(GROW_AFTER - 1):
            sizer.succeeded()
        sizer.shrink(suggested=800, refused=1000)  # a stale refusal: nothing new to learn
        assert sizer.size == 500
        assert sizer.succeeded() == 1000  # and the success count was not reset

    def test_ceiling_must_be_positive(self) -> None:
        with pytest.raises(ValueError):
            RangeSizer(0)
