from __future__ import annotations

import pytest

from scanner.core.finality import block_finality, credit_confirmations, is_final, tag_finality
from scanner.core.ledger import credit_confirmations as reexported
from scanner.core.model import Finality
from tests.core.builders import TIMESTAMPS, ts


def test_block_mode() -> None:
    f = block_finality(100, 12, TIMESTAMPS)
    assert f == Finality(checked=100, final_block=89, final_timestamp=ts(89), required=12)
    assert is_final(89, f)
    assert not is_final(90, f)
    assert credit_confirmations(89, f) == 12
    assert credit_confirmations(100, f) == 1


def test_block_mode_early_in_the_chain_has_no_final_timestamp() -> None:
    f = block_finality(3, 12, TIMESTAMPS)
    assert (f.final_block, f.final_timestamp) == (-8, None)
    assert not is_final(0, f)


def test_tag_mode_is_capped_at_the_checked_block() -> None:
    assert tag_finality(100, 95, TIMESTAMPS) == Finality(100, 95, ts(95), None)
    assert tag_finality(100, 120, TIMESTAMPS) == Finality(100, 100, ts(100), None)


def test_confirmations_never_go_below_zero() -> None:
    f = block_finality(100, 3, TIMESTAMPS)
    assert credit_confirmations(101, f) == 0
    assert credit_confirmations(150, f) == 0


def test_block_mode_counts_up_to_required_only() -> None:
    """A final transfer shows the required count, whatever batch made it final."""
    assert credit_confirmations(50, block_finality(100, 3, TIMESTAMPS)) == 3
    assert credit_confirmations(50, tag_finality(100, 95, TIMESTAMPS)) == 51


def test_required_must_be_positive() -> None:
    with pytest.raises(ValueError):
        block_finality(100, 0, TIMESTAMPS)


def test_ledger_reexports_the_helpers() -> None:
    assert reexported is credit_confirmations
