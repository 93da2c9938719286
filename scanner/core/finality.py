"""Confirmations and finality of a block, against the newest *hash-checked* block.

Confirmations are never counted against an unchecked head number: ``checked`` is the live
cursor, or for a backfill the higher of the live cursor and the newest block it verified itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from scanner.core.model import Finality


def block_finality(checked: int, required: int, timestamps: Mapping[int, int]) -> Finality:
    """Finality in block mode: final when ``checked - block + 1 >= required``.

    ``timestamps`` maps block number → timestamp; the final block's timestamp is looked up there
    (absent → ``final_timestamp`` None → no expiry decision).
    """
    if required < 1:
        raise ValueError(f"required confirmations must be at least 1, got {required}")
    final_block = checked - required + 1
    return Finality(checked, final_block, timestamps.get(final_block), required)


def tag_finality(checked: int, tag_block: int, timestamps: Mapping[int, int]) -> Finality:
    """Finality in tag mode (``finalized``/``safe``): final at or below min(tag block, checked)."""
    final_block = min(tag_block, checked)
    return Finality(checked, final_block, timestamps.get(final_block), None)


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
