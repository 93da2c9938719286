"""Block ranges: splitting a range, and the adaptive range size.

A range is an inclusive ``(start, end)`` pair of block numbers.
"""

from __future__ import annotations

from typing import Final

#: Consecutive successful ranges after which :class:`RangeSizer` doubles its size again.
GROW_AFTER: Final = 8


def split_range(start: int, end: int, size: int) -> list[tuple[int, int]]:
    """``start .. end`` cut into consecutive ranges of at most ``size`` blocks.

    Empty when ``end < start``.
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    return [(lo, min(lo + size - 1, end)) for lo in range(start, end + 1, size)]


class RangeSizer:
    """The getLogs range size: shrinks when a provider refuses a range, grows back on success.

    Mutable on purpose (the one exception in the core): one per chain, owned by its scan loop.
    ``size`` starts at, and never exceeds, ``ceiling`` (the configured ``batch_size``); it never
    goes below 1. After :data:`GROW_AFTER` consecutive successes it doubles (capped at the ceiling).
    """

    __slots__ = ("_ceiling", "_size", "_successes")

    def __init__(self, ceiling: int) -> None:
        if ceiling < 1:
            raise ValueError(f"ceiling must be at least 1, got {ceiling}")
        self._ceiling = ceiling
        self._size = ceiling
        self._successes = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def ceiling(self) -> int:
        return self._ceiling

    def shrink(self, suggested: int | None = None, *, refused: int | None = None) -> int:
        """Halve the size, or take the provider's ``suggested`` size when that is smaller.

        ``refused`` is the size of the range the provider refused (default: the current size);
        the new size is half of it, or the suggestion when that is smaller than it. A suggestion
        is only ever used to shrink. A refusal that asks for no less than the current size (a
        range read at a larger size, by a concurrent read, before an earlier refusal shrank it)
        changes nothing: concurrent refusals of one cap shrink the size once, not once each.
        Returns the new size.
        """
        base = self._size if refused is None else refused
        new = base // 2
        if suggested is not None and suggested < base:
            new = suggested
        if refused is not None and new >= self._size:
            return self._size
        self._size = max(1, new)
        self._successes = 0
        return self._size

    def succeeded(self) -> int:
        """Record a successful range; returns the (possibly grown) size."""
        self._successes += 1
        if self._successes >= GROW_AFTER:
            self._successes = 0
            self._size = min(self._ceiling, self._size * 2)
        return self._size

    def __repr__(self) -> str:
        return f"RangeSizer(size={self._size}, ceiling={self._ceiling})"
