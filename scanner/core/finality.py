"""Confirmations and finality of a block, against the newest *hash-checked* block.

Confirmations are never counted against an unchecked head number: ``checked`` is the live
cursor, or for a backfill the higher of the live cursor and the newest block it verified itself.
This module is the one place finality is decided; the scan, the backfill, the reorg walk-back
and the property tests all call :func:`finality_at`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scanner.core.model import Finality

#: Stored blocks kept beyond what the rules need: the block just below a range, a lagging
#: finality tag and a catch-up's look-up by time still find their timestamps there.
KEEP_MARGIN = 8


def final_block(checked: int, *, required: int | None, tag_block: int | None) -> int:
    """The highest final block when ``checked`` is the newest hash-checked block.

    Block mode (``required`` confirmations): ``checked - required + 1``. Tag mode (``required``
    None, ``finalized``/``safe``): ``min(tag_block, checked)``, and nothing is final before the
    node has named a tag block.
    """
    if required is not None:
        if required < 1:
            raise ValueError(f"required confirmations must be at least 1, got {required}")
        return checked - required + 1
    return min(tag_block if tag_block is not None else -1, checked)


def finality_at(
    checked: int,
    *,
    required: int | None,
    tag_block: int | None,
    timestamps: Mapping[int, int],
    verify: bool = False,
) -> Finality:
    """What is final as of ``checked``; the final block's time comes from ``timestamps``
    (absent → ``final_timestamp`` None → no expiry decision)."""
    final = final_block(checked, required=required, tag_block=tag_block)
    return Finality(checked, final, timestamps.get(final), required, verify)


def credit_final(block_number: int, verified: bool, finality: Finality) -> bool:
    """Whether a credit in ``block_number`` is final: its block is, and where the chain has
    ``verify_urls``, a second provider agreed with it."""
    return is_final(block_number, finality) and (verified or not finality.verify)


def blocks_to_keep(reorg_depth: int, required: int | None) -> int:
    """How many stored blocks below the cursor the scan keeps (and the catch-up reads).

    The walk-back compares ``reorg_depth`` of them with the node; the expiry decision needs the
    timestamp of the final block, ``required`` below the cursor; :data:`KEEP_MARGIN` more for the
    block just below a range and a tag that lags.
    """
    return reorg_depth + (required or 0) + KEEP_MARGIN


def deep_end(head: int, reorg_depth: int, *, tag_mode: bool, tag_block: int | None) -> int:
    """The newest block a range may end at and be read without a header per block: older than
    the reorg window below ``head``, and in tag mode not above the tag's block (the finality of
    a deep range's blocks is then the block before each one, whose time it reads); in tag mode
    before the node names a tag, none."""
    deep = head - reorg_depth
    if not tag_mode:
        return deep
    return min(deep, tag_block if tag_block is not None else -1)


def timed_blocks(blocks: Iterable[int], end: int, required: int | None) -> set[int]:
    """The blocks whose times a range's plan reads, when it holds transfers in ``blocks`` and
    ends at ``end``: each transfer's block, the final block when the block before it was
    checked (:func:`final_block`; in tag mode the block before, as a tag far above a deep range
    would be), and the blocks from ``end``'s final block to ``end`` (the final blocks of the
    next range's first blocks). A range far below the head reads headers of these alone, not
    one per block."""
    back = required if required is not None else 1
    out = set(range(end - back + 1, end + 1))  # the next range's first blocks read these
    for block in blocks:
        out.add(block)
        out.add(block - back)
    return {n for n in out if n >= 0}


def credit_confirmations(block_number: int, finality: Finality) -> int:
    """``checked - block_number + 1``, never below 0; in block mode at most ``required``.

    Final transfers stop being counted (their rows are not rewritten at every batch), so the
    count stops at the number that made them final: a live scan and a backfill of the same
    blocks then store the same value, whatever their batch boundaries.
    """
    count = max(0, finality.checked - block_number + 1)
    return count if finality.required is None else min(count, finality.required)


def is_final(block_number: int, finality: Finality) -> bool:
    """Whether a block is final: at or below ``final_block``."""
    return block_number <= finality.final_block
