from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import pytest

from scanner.core.model import Header
from scanner.core.reorg import (
    check_link,
    check_sparse_link,
    disagrees_with_stored,
    find_common_ancestor,
    logs_agree,
    replaced_credits,
    walk_back_plan,
)
from scanner.errors import DeepReorg, MalformedResponse
from tests.core.builders import block_hash, ts


def chain(first: int, last: int, variant: int = 0, fork_at: int | None = None) -> list[Header]:
    """Headers first..last; blocks at or above ``fork_at`` use ``variant`` hashes."""
    headers = []
    for n in range(first, last + 1):
        mine = variant if fork_at is not None and n >= fork_at else 0
        parent = variant if fork_at is not None and n - 1 >= fork_at else 0
        headers.append(Header(n, block_hash(n, mine), block_hash(n - 1, parent), ts(n)))
    return headers


class TestCheckSparseLink:
    """A range far below the head has a few headers, always its first: that one links."""

    def sparse(self, *numbers: int, variant: int = 0, fork_at: int | None = None) -> list[Header]:
        whole = chain(min(numbers), max(numbers), variant, fork_at)
        return [h for h in whole if h.number in numbers]

    def test_linked_by_its_first_block(self) -> None:
        assert check_sparse_link(self.sparse(11, 12, 30, 50), 11, (10, block_hash(10))) is None

    def test_the_stored_parent_was_replaced(self) -> None:
        stored = (10, block_hash(10, variant=7))
        assert check_sparse_link(self.sparse(11, 30, 50), 11, stored) == 11

    def test_consecutive_headers_must_link(self) -> None:
        headers = self.sparse(11, 29, 30, 50, variant=2, fork_at=30)
        headers[1] = self.sparse(29, variant=3, fork_at=0)[0]
        assert check_sparse_link(headers, 11, (10, block_hash(10))) == 30

    def test_without_a_stored_parent_the_headers_still_agree(self) -> None:
        assert check_sparse_link(self.sparse(0, 20, 21), 0, None) is None

    def test_a_range_without_its_first_header_cannot_be_linked(self) -> None:
        with pytest.raises(MalformedResponse):
            check_sparse_link(self.sparse(12, 30), 11, (10, block_hash(10)))


class TestDisagreesWithStored:
    """A range read beside the live scan against the blocks the live scan stored."""

    def test_the_same_blocks_agree(self) -> None:
        read = chain(11, 20)
        hashes = {h.number: h.hash for h in read}
        assert disagrees_with_stored(chain(8, 15), read, hashes, 11) is None

    def test_another_fork_of_a_stored_block(self) -> None:
        read = chain(11, 20, variant=2, fork_at=14)
        hashes = {h.number: h.hash for h in read}
        assert disagrees_with_stored(chain(8, 15), read, hashes, 11) == 14

    def test_a_first_block_on_another_parent(self) -> None:
        read = chain(10, 20, variant=2, fork_at=10)[1:]  # from 11, whose parent is a fork's 10
        hashes = {h.number: h.hash for h in read}
        assert disagrees_with_stored(chain(8, 10), read, hashes, 11) == 10

    def test_nothing_stored_in_the_range(self) -> None:
        read = chain(11, 20, variant=2, fork_at=11)
        assert disagrees_with_stored([], read, {h.number: h.hash for h in read}, 11) is None

    def test_a_sparse_read_is_judged_where_it_has_hashes(self) -> None:
        read = [h for h in chain(11, 20, variant=2, fork_at=16) if h.number in (11, 20)]
        hashes = {h.number: h.hash for h in read}
        assert disagrees_with_stored(chain(8, 15), read, hashes, 11) is None
        assert disagrees_with_stored(chain(8, 20), read, hashes, 11) == 20


class TestCheckLink:
    def test_linked_range(self) -> None:
        assert check_link(chain(11, 20), (10, block_hash(10))) is None

    def test_first_range_without_stored_parent(self) -> None:
        assert check_link(chain(0, 5), None) is None

    def test_empty(self) -> None:
        assert check_link([], (10, block_hash(10))) is None

    def test_stored_parent_was_replaced(self) -> None:
        assert check_link(chain(11, 20), (10, block_hash(10, variant=7))) == 11

    def test_break_inside_the_range(self) -> None:
        headers = chain(11, 20)
        headers[4] = Header(15, block_hash(15, 3), block_hash(14, 3), ts(15))
        assert check_link(headers, (10, block_hash(10))) == 15

    def test_a_consistent_fork_inside_the_range_breaks_at_the_fork(self) -> None:
        headers = chain(11, 20, variant=2, fork_at=16)
        headers[5] = chain(16, 16)[0]  # the node changed its mind between reading 16 and 17
        assert check_link(headers, (10, block_hash(10))) == 17
        assert check_link(chain(11, 20, variant=2, fork_at=16), (10, block_hash(10))) is None

    def test_not_contiguous(self) -> None:
        headers = chain(11, 13) + chain(15, 16)
        with pytest.raises(MalformedResponse):
            check_link(headers, (10, block_hash(10)))

    def test_not_ascending(self) -> None:
        with pytest.raises(MalformedResponse):
            check_link(list(reversed(chain(11, 13))), None)

    def test_stored_parent_must_be_the_block_below(self) -> None:
        with pytest.raises(ValueError):
            check_link(chain(11, 13), (9, block_hash(9)))


def raw_log(number: int, hash_: str) -> dict[str, object]:
    return {"blockNumber": hex(number), "blockHash": hash_}


class TestLogsAgree:
    def test_agree(self) -> None:
        logs = [raw_log(11, block_hash(11)), raw_log(13, block_hash(13).upper().replace("X", "x"))]
        assert logs_agree(logs, chain(11, 13))

    def test_no_logs(self) -> None:
        assert logs_agree([], chain(11, 13))

    def test_other_hash(self) -> None:
        assert not logs_agree([raw_log(12, block_hash(12, 1))], chain(11, 13))

    def test_block_outside_the_headers(self) -> None:
        assert not logs_agree([raw_log(14, block_hash(14))], chain(11, 13))

    def test_malformed(self) -> None:
        with pytest.raises(MalformedResponse):
            logs_agree([{"blockNumber": "0xb"}], chain(11, 13))
        with pytest.raises(MalformedResponse):
            logs_agree([raw_log(11, "0x1234")], chain(11, 13))


class TestLogsAgreeFarBelowTheHead:
    """``complete=False``: a range read without a header per block (only its end's here)."""

    def test_logs_of_blocks_without_headers_agree_among_themselves(self) -> None:
        shouted = block_hash(12).upper().replace("X", "x")
        logs = [raw_log(11, block_hash(11)), raw_log(12, block_hash(12)), raw_log(12, shouted)]
        assert logs_agree(logs, chain(20, 20), complete=False)
        assert not logs_agree(logs, chain(20, 20))  # a complete range lacks their headers

    def test_two_hashes_for_one_block_disagree(self) -> None:
        logs = [raw_log(12, block_hash(12)), raw_log(12, block_hash(12, 1))]
        assert not logs_agree(logs, chain(20, 20), complete=False)
        assert not logs_agree(list(reversed(logs)), chain(20, 20), complete=False)

    def test_a_log_disagrees_with_its_blocks_header(self) -> None:
        logs = [raw_log(11, block_hash(11)), raw_log(20, block_hash(20, 1))]
        assert not logs_agree(logs, chain(20, 20), complete=False)
        assert logs_agree(logs[:1], chain(20, 20), complete=False)

    def test_malformed(self) -> None:
        with pytest.raises(MalformedResponse):
            logs_agree([raw_log(11, "0x1234")], chain(20, 20), complete=False)


@dataclass(frozen=True)
class Stored:
    block_number: int
    block_hash: str


STORED = (Stored(11, block_hash(11)), Stored(12, block_hash(12)), Stored(13, block_hash(13)))


class TestReplacedCredits:
    stored = STORED
    node = MappingProxyType({11: block_hash(11), 13: block_hash(13, 1)})  # 12 not read; 13 new

    def test_a_complete_range_orphans_credits_of_blocks_it_does_not_name(self) -> None:
        assert replaced_credits(self.stored, self.node) == list(self.stored[1:])

    def test_far_below_the_head_credits_of_unknown_blocks_stay(self) -> None:
        assert replaced_credits(self.stored, self.node, complete=False) == [self.stored[2]]

    def test_far_below_the_head_same_hashes_stay(self) -> None:
        node = {n: block_hash(n) for n in (11, 12, 13)}
        assert replaced_credits(self.stored, node, complete=False) == []


class TestCommonAncestor:
    def test_highest_agreeing_block(self) -> None:
        stored = {n: block_hash(n) for n in range(90, 101)}
        node = {n: block_hash(n, 1 if n > 96 else 0) for n in range(90, 101)}
        assert find_common_ancestor(stored, node) == 96

    def test_none_in_the_window(self) -> None:
        stored = {n: block_hash(n) for n in range(90, 101)}
        node = {n: block_hash(n, 1) for n in range(90, 101)}
        assert find_common_ancestor(stored, node) is None

    def test_missing_blocks_on_one_side(self) -> None:
        stored = {n: block_hash(n) for n in range(90, 101)}
        node = {n: block_hash(n) for n in range(85, 95)}  # a lagging node
        assert find_common_ancestor(stored, node) == 94


class TestWalkBack:
    def test_rewinds_to_the_ancestor(self) -> None:
        plan = walk_back_plan(100, 96, max_depth=10)
        assert (plan.new_cursor, plan.depth, plan.too_deep) == (96, 4, False)
        plan.raise_if_too_deep("ethereum")

    def test_depth_equal_to_max_is_allowed(self) -> None:
        assert not walk_back_plan(100, 90, max_depth=10).too_deep

    def test_too_deep(self) -> None:
        plan = walk_back_plan(100, 89, max_depth=10)
        assert plan.too_deep
        with pytest.raises(DeepReorg) as caught:
            plan.raise_if_too_deep("polygon")
        error = caught.value
        assert (error.chain, error.depth, error.max_depth) == ("polygon", 11, 10)

    def test_no_ancestor_is_too_deep_and_does_not_rewind(self) -> None:
        plan = walk_back_plan(100, None, max_depth=10)
        assert plan.too_deep
        assert plan.new_cursor == 100
        assert plan.depth == 11

    def test_ancestor_above_cursor(self) -> None:
        with pytest.raises(ValueError):
            walk_back_plan(100, 101, max_depth=10)


class TestShortHistory:
    """A chain that started scanning recently has fewer stored blocks than the window."""

    def test_no_agreeing_block_in_a_short_history_rewinds_below_it(self) -> None:
        plan = walk_back_plan(cursor=110, ancestor=None, max_depth=64, oldest_stored=100)
        assert (plan.new_cursor, plan.depth, plan.too_deep) == (99, 11, False)

    def test_a_full_window_without_agreement_is_too_deep(self) -> None:
        plan = walk_back_plan(cursor=200, ancestor=None, max_depth=64, oldest_stored=100)
        assert plan.too_deep

    def test_a_credit_below_a_short_history_is_too_deep(self) -> None:
        plan = walk_back_plan(110, None, max_depth=64, oldest_stored=100, credited_below=True)
        assert plan.too_deep and plan.new_cursor == 110
