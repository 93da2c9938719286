"""With ``verify_urls`` a credit is final only once verified in its block: the pure rule."""

from __future__ import annotations

from scanner.core.finality import credit_final, finality_at
from scanner.core.model import Credit
from scanner.core.states import target_status


def credit(block: int, *, verified: bool, value: int = 5) -> Credit:
    return Credit(
        "0x" + "ab" * 32, 0, block, "0x" + "cd" * 32, 1000, value, False, False, verified=verified
    )


def test_a_deep_credit_confirms_only_once_verified_where_the_chain_asks_for_it() -> None:
    plain = finality_at(20, required=3, tag_block=None, timestamps={})
    checked = finality_at(20, required=3, tag_block=None, timestamps={}, verify=True)
    deep, shallow = 10, 19
    assert credit_final(deep, False, plain) and credit_final(deep, True, checked)
    assert not credit_final(deep, False, checked)
    assert not credit_final(shallow, True, checked)  # verified, but not deep enough
    assert target_status(5, 10**10, [credit(deep, verified=False)], plain) == "confirmed"
    assert target_status(5, 10**10, [credit(deep, verified=False)], checked) == "confirming"
    assert target_status(5, 10**10, [credit(deep, verified=True)], checked) == "confirmed"
    both = [credit(deep, verified=True, value=2), credit(deep + 1, verified=False, value=3)]
    assert target_status(5, 10**10, both, checked) == "confirming"  # every counted credit
