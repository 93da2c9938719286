"""How far back a catch-up reads, and reading that window for many addresses at once.

A look-back starts at the first block whose time is at or after the payment's ``created_at −
grace``. It is found from the stored blocks (the usual case: a payment written minutes late),
else by a search below them that starts where the chain's block time puts the moment and never
goes lower than ``catch_up_max_blocks`` below the cursor. A block the node cannot show (a pruned
node, one started from a snapshot, expired history: :class:`~scanner.errors.HistoryUnavailable`,
far below the node's head) is a floor too: the look-back reads what the node has and says so
(:class:`Start` ``truncated``), it never stalls the chain on it. A block the node has not got
*yet* (near its head) is waited for: the look-back fails and is tried again next tick.

Many addresses of one token are read as a scan reads: the token's logs over the window, in
ranges, kept only where they pay one of the addresses; a few are read with a recipient filter.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

from scanner.chain.reader import ChainReader
from scanner.core.decode import pays_one_of
from scanner.core.model import Header, Log, Transfer
from scanner.core.ranges import RangeSizer, split_range
from scanner.errors import HistoryUnavailable
from scanner.scan.fetch import fetch_logs, fetch_native

ADDRESS_TOPICS_PER_CALL = 50
WHOLE_LOGS_ABOVE = 4 * ADDRESS_TOPICS_PER_CALL  # more addresses: read the token's logs whole
WINDOW_RANGE = 2_000  # blocks read (and filtered) at a time when reading a token's logs whole
NATIVE_RANGE = 100  # full blocks read at a time for native-coin transfers
DEFAULT_BLOCK_TIME = 12.0


@dataclass(frozen=True, slots=True)
class Start:
    """Where a look-back starts; ``truncated`` says why it is later than asked (None: it is
    not): ``bound`` (older than ``catch_up_max_blocks``) or ``not_available`` (the node)."""

    block: int
    truncated: str | None = None
    detail: str = ""


async def block_at_time(
    reader: ChainReader,
    moment: float,
    high: int,
    known: Mapping[int, int] | None = None,
    *,
    floor: int = 0,
) -> Start:
    """The first block in ``floor..high`` whose timestamp is ≥ ``moment``.

    Looked up in ``known`` (the stored blocks' timestamps) when the moment falls inside them;
    else searched below them: the first probe where the chain's block time puts the moment,
    then steps doubling downwards, then a binary search (a few headers, never from block 0).
    """
    stored = sorted((n, ts) for n, ts in (known or {}).items() if n <= high)
    if stored and stored[0][1] < moment:
        return Start(next((n for n, ts in stored if ts >= moment), high))
    if stored:
        high = stored[0][0]
    search = _Search(reader, moment, max(0, min(floor, high)), high)
    return await search.run(_estimate(stored, moment, high))


def _estimate(stored: Sequence[tuple[int, int]], moment: float, high: int) -> int:
    """The block the chain's block time (from the stored blocks) puts ``moment`` at."""
    if len(stored) >= 2 and stored[-1][0] > stored[0][0]:
        block_time = (stored[-1][1] - stored[0][1]) / (stored[-1][0] - stored[0][0])
    else:
        block_time = DEFAULT_BLOCK_TIME
    first, at = stored[0] if stored else (high, moment)
    return first - int((at - moment) / max(block_time, 0.001))


class _Search:
    """Galloping then binary search over ``low..high`` (``high`` at or after the moment)."""

    def __init__(self, reader: ChainReader, moment: float, low: int, high: int) -> None:
        self.reader, self.moment = reader, moment
        self.low, self.high = low, high
        self.floor = low
        self.missing: HistoryUnavailable | None = None

    async def _at_or_after(self, number: int) -> bool | None:
        """Whether block ``number`` is at or after the moment; None when the node cannot
        show it (the blocks up to it count as gone: the search goes on above)."""
        try:
            header = (await self.reader.headers(number, number))[0]
        except HistoryUnavailable as exc:
            self.missing = exc
            self.low = self.floor = number + 1
            return None
        return header.timestamp >= self.moment

    async def run(self, guess: int) -> Start:
        probe, step = min(max(guess, self.low), self.high), 1
        while self.low < self.high:  # gallop down from the guess
            after = await self._at_or_after(probe)
            if after is None:
                break
            if not after:
                self.low = probe + 1
                break
            self.high = probe
            probe, step = max(self.low, probe - step), step * 2
        while self.low < self.high:
            mid = (self.low + self.high) // 2
            after = await self._at_or_after(mid)
            if after:
                self.high = mid
            elif after is not None:
                self.low = mid + 1
        return await self._result()

    async def _result(self) -> Start:
        """The start found, and whether it is later than the moment asked for: the block below
        it is still at or after the moment (the bound), or cannot be shown (the node)."""
        lowest = self.missing is None and self.low == self.floor and self.floor > 0
        if lowest and await self._at_or_after(self.low - 1):
            return Start(self.low, "bound", f"blocks below {self.low} not looked at")
        if self.missing is not None and self.low == self.floor:
            return Start(self.low, "not_available", str(self.missing))
        return Start(self.low)


async def lowest_available(reader: ChainReader, low: int, high: int) -> int:
    """The lowest block in ``low..high`` the node can show (``high`` when none below it can):
    where a look-back goes on after the node could not show its window's first blocks."""
    search = _Search(reader, float("-inf"), low, high)
    return (await search.run(low)).block


async def token_logs(
    reader: ChainReader,
    token: str,
    addresses: Collection[str],
    start: int,
    end: int,
    sizer: RangeSizer,
) -> list[Log]:
    """The Transfer logs of ``token`` in ``start..end`` to ``addresses`` (lower-case): with a
    recipient filter for a few addresses, else the token's logs whole, a range at a time, kept
    only where they pay one of them (memory follows the matches, not the window)."""
    topics = sorted("0x" + "0" * 24 + a[2:] for a in addresses)
    out: list[Log] = []
    if len(topics) <= WHOLE_LOGS_ABOVE:
        for i in range(0, len(topics), ADDRESS_TOPICS_PER_CALL):
            part = topics[i : i + ADDRESS_TOPICS_PER_CALL]
            out.extend(await fetch_logs(reader, [token], start, end, sizer, to_topics=part))
        return out
    wanted = {a.lower() for a in addresses}
    for a, b in split_range(start, end, WINDOW_RANGE):
        for entry in await fetch_logs(reader, [token], a, b, sizer):
            if pays_one_of(entry, wanted):
                out.append(entry)
    return out


async def native_window(
    reader: ChainReader, addresses: Collection[str], start: int, end: int
) -> list[Transfer]:
    """Native-coin transfers to ``addresses`` in ``start..end``: full blocks read
    ``NATIVE_RANGE`` at a time, only the transfers kept."""
    watched = set(addresses)
    out: list[Transfer] = []
    for a, b in split_range(start, end, NATIVE_RANGE):
        out.extend(await fetch_native(reader, a, b, watched))
    return out


async def read_window(
    reader: ChainReader,
    token: str | None,
    addresses: Collection[str],
    start: Start,
    end: int,
    sizer: RangeSizer,
) -> tuple[Start, list[Log], list[Transfer]]:
    """The logs (or, for the native coin, the transfers) to ``addresses`` from ``start`` to
    ``end``; when the node cannot show a block of the window, from the lowest block it shows
    (the start returned says so)."""
    while True:
        try:
            if token is None:
                return start, [], await native_window(reader, addresses, start.block, end)
            return start, await token_logs(reader, token, addresses, start.block, end, sizer), []
        except HistoryUnavailable as exc:  # a pruned node: go on from what it shows
            if start.block >= end:
                raise
            lowest = await lowest_available(reader, start.block + 1, end)
            start = Start(lowest, "not_available", str(exc))


Found = tuple[list[Log], list[Transfer]]  # a window's logs and native transfers


async def window_headers(
    reader: ChainReader, start: Start, end: int, found: Found, stored: Mapping[int, Header]
) -> tuple[Start, list[Log], list[Transfer], list[Header]]:
    """The headers of the blocks that hold ``found`` (the stored ones from the database, the
    others from the node), with what was found and where the look-back starts. When the node
    cannot show one of those blocks (it served their logs, yet has no header: HistoryUnavailable)
    the look-back starts above the blocks it cannot show, drops what it found there, and says so.
    """
    logs, native = found
    while True:
        numbers = {_block_of(e) for e in logs} | {t.block_number for t in native}
        try:
            read = await reader.headers_at([n for n in numbers if n not in stored])
        except HistoryUnavailable as exc:
            if not isinstance(exc.block, int):
                raise
            lowest = await lowest_available(reader, exc.block + 1, end)
            start = Start(lowest, "not_available", str(exc))
            logs = [e for e in logs if _block_of(e) >= lowest]
            native = [t for t in native if t.block_number >= lowest]
            continue
        kept = [stored[n] for n in numbers if n in stored]
        return start, logs, native, sorted([*read, *kept], key=attrgetter("number"))


def _block_of(entry: Log) -> int:
    return int(entry["blockNumber"], 16)
