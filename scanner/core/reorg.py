"""Reorg detection and the walk back to the common ancestor (docs/design.md, "Confirmations,
finality, reorgs").

Each batch checks that its headers link to each other and to the stored block just below the
range (:func:`check_link`), and that the logs' ``blockHash`` values agree with those headers
(:func:`logs_agree`). On a mismatch the pipeline reads the node's hashes for the window of
``max_reorg_depth`` blocks below the cursor, finds the highest block both sides agree on
(:func:`find_common_ancestor`), and plans the rewind (:func:`walk_back_plan`): the blocks above
the ancestor are dropped (their credits orphaned) and the cursor goes back to the ancestor, unless
the reorg is deeper than ``max_reorg_depth``, which halts the chain.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Protocol, TypeVar

from scanner.core.decode import block_ref, hex_hash, hex_quantity
from scanner.core.model import BlockRef, Header
from scanner.errors import DeepReorg, MalformedResponse


def check_link(headers: Sequence[Header], stored_parent: tuple[int, str] | None) -> int | None:
    """The number of the first header that does not link to the one below it, or ``None``.

    ``headers`` are the range's headers, ascending and contiguous (else MalformedResponse);
    ``stored_parent`` is the stored ``(number, hash)`` of the block just below the range (``None``
    when nothing is stored there, e.g. the very first range). A returned number ``n`` means a
    reorg happened at or below ``n - 1``: the pipeline walks back from there.
    """
    if not headers:
        return None
    first = headers[0].number
    for offset, header in enumerate(headers):
        if header.number != first + offset:
            raise MalformedResponse(
                f"headers are not contiguous: block {header.number} where {first + offset} belongs"
            )
    if stored_parent is not None:
        number, stored_hash = stored_parent
        if number != first - 1:
            raise ValueError(f"stored parent {number} is not the block below {first}")
        if headers[0].parent_hash != stored_hash:
            return first
    for below, header in pairwise(headers):
        if header.parent_hash != below.hash:
            return header.number
    return None


def check_sparse_link(
    headers: Sequence[Header], start: int, stored_parent: tuple[int, str] | None
) -> int | None:
    """:func:`check_link` for a range read without a header per block (far below the head):
    its header at ``start`` must link to ``stored_parent`` (the block just below the range),
    and each two of its headers at consecutive heights to each other. The number of the first
    header that does not link, or ``None``; a range without its first header raises
    MalformedResponse (it could not be linked at all)."""
    by_number = {header.number: header for header in headers}
    first = by_number.get(start)
    if first is None:
        raise MalformedResponse(f"a range from block {start} came without that block's header")
    if stored_parent is not None and check_link([first], stored_parent) is not None:
        return start
    for number in sorted(by_number):
        below = by_number.get(number - 1)
        if below is not None and by_number[number].parent_hash != below.hash:
            return number
    return None


def disagrees_with_stored(
    stored: Sequence[Header], headers: Sequence[Header], hashes: Mapping[int, str], start: int
) -> int | None:
    """The first stored block (``start - 1`` and up) that a range read disagrees with, or
    ``None``: the range's header at ``start`` must name the stored ``start - 1`` as its parent,
    and every block the range has a hash for (``hashes``) must have the stored hash. A range
    read by another process (a backfill) beside the live scan checks this: the live scan's
    stored blocks are what it linked, and a node that names them otherwise serves another fork
    (a stale replica) or one the live scan has not followed yet."""
    first = next((h for h in headers if h.number == start), None)
    for block in stored:
        if block.number == start - 1:
            if first is not None and first.parent_hash != block.hash:
                return block.number
        elif hashes.get(block.number, block.hash) != block.hash:
            return block.number
    return None


def logs_agree(
    logs: Sequence[Mapping[str, Any]],
    headers: Sequence[Header],
    *,
    complete: bool = True,
    passed: Iterable[BlockRef] = (),
) -> bool:
    """Whether every raw log's ``blockHash`` is the hash of the header at its ``blockNumber``,
    and so every block ``passed`` names (the logs read and passed over unread:
    :attr:`~scanner.core.model.PassedOver.blocks`).

    ``complete``: the headers cover every block of the range, and a log in a block they do not
    cover disagrees too (the node answered for another view of the chain). Otherwise (a range
    far below the head, read without a header per block) a log of a block without a header
    must agree with the other logs of its block. A log without a readable block number or hash
    raises MalformedResponse. Each distinct number and hash string is parsed once.
    """
    hashes: dict[int, str] = {header.number: header.hash for header in headers}
    seen: set[tuple[str, str]] = set()
    for raw_number, raw_hash, _ in itertools.chain(map(block_ref, logs), passed):
        hashable = type(raw_number) is str and type(raw_hash) is str
        if hashable and (raw_number, raw_hash) in seen:
            continue
        number = hex_quantity(raw_number, "log blockNumber")
        block_hash = hex_hash(raw_hash, "log blockHash")
        if not complete:
            hashes.setdefault(number, block_hash)
        if hashes.get(number) != block_hash:
            return False
        if hashable:
            seen.add((raw_number, raw_hash))
    return True


def find_common_ancestor(stored: Mapping[int, str], node: Mapping[int, str]) -> int | None:
    """The highest block number at which the stored hash and the node's hash are the same."""
    common = [number for number, hash_ in stored.items() if node.get(number) == hash_]
    return max(common, default=None)


class StoredBlockRef(Protocol):
    @property
    def block_number(self) -> int: ...
    @property
    def block_hash(self) -> str: ...


S = TypeVar("S", bound=StoredBlockRef)


def not_shown(blocks: Iterable[tuple[int, str]], hashes: Mapping[int, str]) -> list[int]:
    """Which of ``blocks`` (number, hash) the node's ``hashes`` name otherwise (or not at all),
    in order: a credit there is in a block the chain no longer holds."""
    return sorted({n for n, h in blocks if hashes.get(n) != h})


def replaced_credits(
    stored: Sequence[S], hashes: Mapping[int, str], *, complete: bool = True
) -> list[S]:
    """The stored credits of a range whose block the node now names by another hash (it
    replaced the block at the same height): orphan them before the range's transfers are
    applied, so that a re-mined transfer is matched again and credited once. ``hashes`` are
    the range's blocks as read; not ``complete`` (a range far below the head, read without a
    header per block): a block absent from them is not judged."""
    if complete:
        return [s for s in stored if hashes.get(s.block_number) != s.block_hash]
    return [s for s in stored if hashes.get(s.block_number, s.block_hash) != s.block_hash]


@dataclass(frozen=True, slots=True)
class ReorgPlan:
    """The rewind after a reorg: drop the blocks above ``new_cursor`` and scan again from there.

    ``depth`` is the number of dropped blocks (``cursor - ancestor``); with no common ancestor in
    the window it is ``max_depth + 1`` ("at least") and ``new_cursor`` stays at the cursor.
    ``too_deep`` (``depth > max_depth``) means: do not rewind, halt the chain.
    """

    new_cursor: int
    depth: int
    max_depth: int

    @property
    def too_deep(self) -> bool:
        return self.depth > self.max_depth

    def raise_if_too_deep(self, chain: str) -> None:
        """Raise :class:`~scanner.errors.DeepReorg` for ``chain`` when the reorg is too deep."""
        if self.too_deep:
            raise DeepReorg(chain=chain, depth=self.depth, max_depth=self.max_depth)


def walk_back_plan(
    cursor: int,
    ancestor: int | None,
    max_depth: int,
    oldest_stored: int | None = None,
    *,
    credited_below: bool = False,
) -> ReorgPlan:
    """Plan the rewind from ``cursor`` to the common ``ancestor`` (``None``: none in the window).

    ``oldest_stored``: the lowest block whose hash is stored. When it is inside the window (the
    chain started scanning there, so its history is shorter than ``max_depth``) and no stored
    block agrees with the node, the rewind goes to just below it, but only when nothing is
    credited below it in the window (``credited_below`` False): then rescanning from there is
    safe and the reorg is not known to be deeper than ``max_depth``. A credit there (a backfill
    ran before the first live scan) may be in a replaced block that no stored hash can tell:
    the chain halts, as for a reorg deeper than ``max_depth``.
    """
    short = oldest_stored is not None and cursor - oldest_stored < max_depth
    if ancestor is None and oldest_stored is not None and short and not credited_below:
        ancestor = oldest_stored - 1
    if ancestor is None:
        return ReorgPlan(new_cursor=cursor, depth=max_depth + 1, max_depth=max_depth)
    if ancestor > cursor:
        raise ValueError(f"common ancestor {ancestor} is above the cursor {cursor}")
    return ReorgPlan(new_cursor=ancestor, depth=cursor - ancestor, max_depth=max_depth)
