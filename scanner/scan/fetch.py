"""Reading one block range from the node: headers, Transfer logs, native transfers.

Everything here is RPC and happens before the range's database transaction opens, so no
database transaction is held while the network is slow. The range shrinks when a provider says it
is too large (``RangeSizer``) and the reads it needs are retried by the RPC client.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import operator
from collections.abc import Awaitable, Callable, Collection, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import cast

from scanner.chain.reader import ChainReader, Sieve
from scanner.core.decode import (
    TRANSFER_TOPIC,
    Decoded,
    block_ref,
    decode_ahead,
    hex_hash,
    hex_quantity,
    native_transfers,
)
from scanner.core.finality import timed_blocks
from scanner.core.model import BlockRef, Header, Log, PassedOver, Transfer
from scanner.core.ranges import RangeSizer, split_range
from scanner.errors import MalformedResponse, RangeInconsistent, RangeTooLarge

# The native-coin recipients to keep: a set, or a lookup of the range's recipients (async).
NativeLookup = Callable[[set[str]], Awaitable[set[str]]]
NativeWatch = Collection[str] | NativeLookup


class _Anyone:
    def __contains__(self, item: object) -> bool:
        return True


def watches_none(watched: NativeWatch) -> bool:
    """Whether no native-coin transfer is looked for (then no full block is read)."""
    return not callable(watched) and not watched


@dataclass(frozen=True, slots=True)
class RangeData:
    """What the node said about blocks ``start..end``, read in one go."""

    start: int
    end: int
    headers: tuple[Header, ...]
    logs: tuple[Log, ...]
    native: tuple[Transfer, ...] = field(default=())
    #: A range far below the head, read without a header per block (:func:`fetch_deep`):
    #: ``headers`` are those of the blocks whose times the plan reads (and ``end``), ``times``
    #: adds the logs' ``blockTimestamp``.
    times: Mapping[int, int] | None = None
    log_hashes: Mapping[int, str] = field(default_factory=dict)  # the logs' blockHash (deep)
    #: The logs read and passed over unread (:func:`~scanner.chain.shapes.sifted`): ``logs``
    #: holds only the others.
    passed: PassedOver = field(default_factory=PassedOver)
    #: ``logs`` decoded as soon as they were read (:meth:`decoded_ahead`), before the commit
    #: that knows the recipients watched: ``None``, or decoded from other logs, is decoded then.
    ahead: Decoded | None = None

    def decoded_ahead(self, tokens: Container[str]) -> RangeData:
        """The range with its logs decoded now (:func:`~scanner.core.decode.decode_ahead`):
        the work of the commit that credits them, done while the one before it writes."""
        return replace(self, ahead=decode_ahead(self.logs, tokens, self.timestamps))

    def decoded(self) -> Decoded | None:
        """What its logs decoded to ahead, if these very logs were."""
        ahead = self.ahead
        return ahead if ahead is not None and ahead.logs is self.logs else None

    @property
    def read(self) -> int:
        """How many logs the node answered: those kept and those passed over."""
        return len(self.logs) + self.passed.count

    @property
    def dense(self) -> bool:
        """Whether ``headers`` hold every block of the range (then they are hash-linked)."""
        return self.times is None

    @property
    def hashes(self) -> dict[int, str]:
        """The blocks' hashes as read: every block's for a dense range, else the headers' and
        the logs' (a deep range's other blocks are not known here)."""
        return {**self.log_hashes, **{h.number: h.hash for h in self.headers}}

    @property
    def timestamps(self) -> dict[int, int]:
        if self.times is not None:
            return dict(self.times)
        return {h.number: h.timestamp for h in self.headers}

    @property
    def last(self) -> Header:
        return self.headers[-1]


def joined(first: RangeData, second: RangeData) -> RangeData:
    """Two ranges read one after the other (each already checked) as one, to commit at once:
    ``second`` starts where ``first`` ends, and both have a header per block or neither. Two
    headers of one block that disagree (a deep range's reads name some blocks twice) raise
    :class:`~scanner.errors.RangeInconsistent`: the node changed its answer; read again."""
    if second.start != first.end + 1 or second.dense != first.dense:
        raise ValueError(
            f"ranges {first.start}-{first.end} and {second.start}-{second.end} do not join"
        )
    by_number = {h.number: h for h in first.headers}
    if any(by_number.get(h.number, h) != h for h in second.headers):
        raise RangeInconsistent("two reads name a block by different headers; reading again")
    by_number.update((h.number, h) for h in second.headers)
    times = None if first.times is None else {**first.times, **(second.times or {})}
    before, after = first.decoded(), second.decoded()
    both = before + after if before is not None and after is not None else None
    return RangeData(
        first.start,
        second.end,
        tuple(sorted(by_number.values(), key=_number)),
        first.logs + second.logs if both is None else cast(tuple[Log, ...], both.logs),
        first.native + second.native,
        times=times,
        log_hashes={**first.log_hashes, **second.log_hashes},
        passed=first.passed + second.passed,
        ahead=both,
    )


LOG_PIECES = 4  # a range's getLogs is read as up to this many sub-ranges at once
MIN_PIECE = 50  # blocks: smaller ranges are not split
TOPICS_PER_CALL = 500  # recipients in one eth_getLogs topic filter


def recipient_topic(address: str) -> str:
    """A recipient as a Transfer log's third topic (32 bytes, lower-case)."""
    return "0x" + "0" * 24 + address[2:].lower()


async def fetch_logs(
    reader: ChainReader,
    tokens: Sequence[str],
    start: int,
    end: int,
    sizer: RangeSizer | None = None,
    *,
    to_topics: Sequence[str] | None = None,
    split: int = LOG_PIECES,
) -> list[Log]:
    """All Transfer logs of ``tokens`` in ``start..end`` (to ``to_topics`` recipients when
    given), read as up to ``split`` sub-ranges at once (a node answers several smaller queries
    faster than one large one), each split further when the provider refuses it as too large."""
    logs, _ = await fetch_sifted(
        reader, tokens, start, end, sizer, to_topics=to_topics, split=split, watched=None
    )
    return logs


async def fetch_sifted(
    reader: ChainReader,
    tokens: Sequence[str],
    start: int,
    end: int,
    sizer: RangeSizer | None = None,
    *,
    to_topics: Sequence[str] | None = None,
    split: int = LOG_PIECES,
    watched: Sieve | None,
) -> tuple[list[Log], PassedOver]:
    """:func:`fetch_logs`, each answer sifted as it is parsed when ``watched`` (recipient
    topics, :func:`~scanner.core.decode.watched_topics`) is given: the logs that may pay one
    of them or must be decoded to be counted or refused, and what is kept of the others."""
    if not tokens or (to_topics is not None and not to_topics):
        return [], PassedOver()
    if sizer is None:
        sizer = RangeSizer(end - start + 1)
    piece = _piece(start, end, split)
    filters: list[Sequence[str] | None] = [None]
    if to_topics is not None:
        ordered, step = sorted(to_topics), TOPICS_PER_CALL
        filters = [ordered[i : i + step] for i in range(0, len(ordered), step)]
    parts = await asyncio.gather(
        *(
            _fetch_piece(reader, tokens, a, b, sizer, topics, watched)
            for a, b in split_range(start, end, piece)
            for topics in filters
        )
    )
    passed = functools.reduce(operator.add, (p for _, p in parts), PassedOver())
    return [log for logs, _ in parts for log in logs], passed


async def _fetch_piece(
    reader: ChainReader,
    tokens: Sequence[str],
    start: int,
    end: int,
    sizer: RangeSizer,
    to_topics: Sequence[str] | None,
    watched: Sieve | None,
) -> tuple[list[Log], PassedOver]:
    out: list[Log] = []
    passed = PassedOver()
    cursor = start
    while cursor <= end:
        stop = min(end, cursor + sizer.size - 1)
        try:
            logs, more = await _read_logs(reader, tokens, cursor, stop, to_topics, watched)
        except RangeTooLarge as exc:
            if stop == cursor:
                raise
            sizer.shrink(exc.suggested_size, refused=stop - cursor + 1)
            continue
        sizer.succeeded()
        out.extend(logs)
        passed += more
        cursor = stop + 1
    return out, passed


async def _read_logs(
    reader: ChainReader,
    tokens: Sequence[str],
    start: int,
    end: int,
    to_topics: Sequence[str] | None,
    watched: Sieve | None,
) -> tuple[list[Log], PassedOver]:
    if watched is None:
        logs = await reader.logs(tokens, TRANSFER_TOPIC, start, end, to_topics=to_topics)
        return logs, PassedOver()
    return await reader.sifted_logs(
        tokens, TRANSFER_TOPIC, start, end, watched=watched, to_topics=to_topics
    )


async def fetch_native(
    reader: ChainReader, start: int, end: int, watched: NativeWatch
) -> list[Transfer]:
    """Top-level value transfers to ``watched`` (a set, or a lookup of the recipients) in
    ``start..end`` whose receipt succeeded."""
    if watches_none(watched):
        return []
    blocks = await reader.blocks_with_transactions(start, end)
    if callable(watched):
        candidates = native_transfers(blocks, _Anyone())
        kept = await watched({t.to_address for t in candidates}) if candidates else set()
        candidates = [t for t in candidates if t.to_address in kept]
    else:
        candidates = native_transfers(blocks, watched)
    if not candidates:
        return []
    statuses = await reader.receipt_statuses([t.tx_hash for t in candidates])
    failed = {h for h, status in statuses.items() if status != 1}
    return [t for t in candidates if t.tx_hash not in failed]


async def fetch_range(
    reader: ChainReader,
    tokens: Sequence[str],
    start: int,
    end: int,
    *,
    native_watched: NativeWatch = (),
    sizer: RangeSizer | None = None,
    by_hash: bool = False,
    to_topics: Sequence[str] | None = None,
    watched: Sieve | None = None,
) -> RangeData:
    """Headers and logs of one range; logs must agree with the headers.

    Far from the head, headers and logs are read concurrently by number, the logs sifted by
    ``watched`` when given (:func:`fetch_sifted`). Near the head (``by_hash``), logs are read
    by block hash (EIP-234) after the headers: a node behind a load balancer that has not
    imported a block yet answers an empty list by number, but fails loudly for a hash it does
    not know, so a block is never passed over as empty.
    """
    passed = PassedOver()
    if by_hash:
        headers = await reader.headers(start, end)
        _check_headers(headers, start, end)
        logs = await _logs_by_hash(reader, tokens, headers)
    else:
        headers_task = reader.headers(start, end)
        logs_task = fetch_sifted(
            reader, tokens, start, end, sizer, to_topics=to_topics, watched=watched
        )
        headers, (logs, passed) = await asyncio.gather(headers_task, logs_task)
        _check_headers(headers, start, end)
    native = await fetch_native(reader, start, end, native_watched)
    return RangeData(start, end, tuple(headers), tuple(logs), tuple(native), passed=passed)


async def fetch_deep(
    reader: ChainReader,
    tokens: Sequence[str],
    start: int,
    end: int,
    *,
    required: int | None,
    sizer: RangeSizer | None = None,
    to_topics: Sequence[str] | None = None,
    watched: Sieve | None = None,
) -> RangeData:
    """A range far below the head (older than the reorg window), read near the node's limit:
    its logs (to ``to_topics`` recipients when given; sifted by ``watched`` when given), read as
    a few sub-ranges at once (:func:`fetch_sifted`), then in one read the headers of only the
    blocks whose times the plan reads (:func:`~scanner.core.finality.timed_blocks`) that no
    log's ``blockTimestamp`` gave, and always ``start`` (whose parent hash links the range to
    the block stored below it) and ``end`` (what the next range links to). No native
    transfers: those need full blocks (:func:`fetch_range`).

    The headers wait for every sub-range's logs: a block one sub-range's transfers need the
    time of is often timed by another's logs (the blocks just before a sub-range), so the range
    asks once for the few no log timed. The plan reads the times of the kept logs' blocks
    alone: those passed over pay nobody (their hashes are still checked)."""
    logs, passed = await fetch_sifted(
        reader, tokens, start, end, sizer, to_topics=to_topics, watched=watched
    )
    hashes, times = log_blocks(logs, passed.blocks)
    paying = log_blocks(logs)[0] if passed.count else hashes
    wanted = (timed_blocks(paying, end, required) - times.keys()) | {start, end}
    headers = await reader.headers_at(sorted(wanted))
    times.update((h.number, h.timestamp) for h in headers)
    return RangeData(
        start, end, tuple(headers), tuple(logs), times=times, log_hashes=hashes, passed=passed
    )


def _piece(start: int, end: int, pieces: int) -> int:
    """The blocks of each of ``pieces`` sub-ranges of ``start..end`` (at least MIN_PIECE)."""
    return max(MIN_PIECE, -(-(end - start + 1) // pieces))


def _number(header: Header) -> int:
    return header.number


def log_blocks(
    logs: Sequence[Log], passed: Iterable[BlockRef] = ()
) -> tuple[dict[int, str], dict[int, int]]:
    """The logs' blocks (and those ``passed`` names: :attr:`PassedOver.blocks`): their hashes,
    and their times where the node gives ``blockTimestamp`` (else the block's header is read).
    Each block's fields are parsed once, from its first log; whether its other logs agree is
    :func:`~scanner.core.reorg.logs_agree`'s question."""
    hashes: dict[int, str] = {}
    times: dict[int, int] = {}
    seen: set[str] = set()
    for raw, block_hash, stamp in itertools.chain(map(block_ref, logs), passed):
        if raw in seen:
            continue
        number = hex_quantity(raw, "log blockNumber")
        hashes[number] = hex_hash(block_hash, "log blockHash")
        if stamp is not None:
            times[number] = hex_quantity(stamp, "log blockTimestamp")
        seen.add(raw)
    return hashes, times


async def _logs_by_hash(
    reader: ChainReader, tokens: Sequence[str], headers: Sequence[Header]
) -> list[Log]:
    if not tokens:
        return []
    parts = await asyncio.gather(
        *(reader.logs_by_block_hash(tokens, TRANSFER_TOPIC, h.hash) for h in headers)
    )
    return [log for part in parts for log in part]


def _check_headers(headers: Sequence[Header], start: int, end: int) -> None:
    numbers = [h.number for h in headers]
    if numbers != list(range(start, end + 1)):
        raise MalformedResponse(f"headers for {start}..{end} came back as {numbers[:3]}…")
