"""The tests' one polling rule (:mod:`tests.support.wait`), async and sync alike."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.wait import until, until_sync


def counting(answers: list[Any]) -> Callable[[], Any]:
    """A check that gives ``answers`` one by one, raising those that are exceptions."""
    given = iter(answers)

    def check() -> Any:
        answer = next(given)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return check


async def test_until_returns_the_first_truthy_value_of_a_sync_or_async_check() -> None:
    assert await until(counting([0, None, "", 7, 8]), every=0) == 7
    calls = itertools.count()

    async def third() -> int | None:
        n = next(calls)
        return n if n == 2 else None

    assert await until(third, every=0) == 2


def test_until_sync_returns_the_first_truthy_value() -> None:
    assert until_sync(counting([False, [], ["x"]]), every=0) == ["x"]


async def test_a_wait_that_times_out_names_what_the_last_value_and_the_detail() -> None:
    async def row() -> str:
        return "status pending"

    with pytest.raises(AssertionError) as failed:
        await until(lambda: 0, 0.05, "the payment confirmed", every=0.01, detail=row)
    message = str(failed.value)
    assert message.startswith("the payment confirmed: not reached in 0.05 s (last: 0)")
    assert message.endswith("\nstatus pending")
    with pytest.raises(AssertionError, match=r"^ready: not reached in 0.05 s \(last: ''\)\nlog$"):
        until_sync(lambda: "", 0.05, "ready", 0.01, detail=lambda: "log")


async def test_an_ignored_error_is_not_yet_and_any_other_fails_at_once() -> None:
    refused = ConnectionRefusedError("not listening")
    assert await until(counting([refused, refused, 5]), every=0, ignoring=(OSError,)) == 5
    assert until_sync(counting([refused, 5]), every=0, ignoring=(OSError,)) == 5
    with pytest.raises(AssertionError, match=r"ConnectionRefusedError\('not listening'\)"):
        until_sync(lambda: counting([refused])(), 0.02, every=0.01, ignoring=(OSError,))
    with pytest.raises(ValueError, match="bad row"):
        await until(counting([None, ValueError("bad row"), 5]), every=0, ignoring=(OSError,))
    with pytest.raises(AssertionError, match="the process exited"):
        until_sync(counting([None, AssertionError("the process exited")]), every=0)
