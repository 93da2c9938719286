"""The first look at a large unseen book goes on beside the live scan: new blocks are scanned
and credited while the book is looked at, page by page. A transfer to an unseen payment is found
by the scan or by the look-back, and credited once."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from typing import Any

from scanner.db import payments
from scanner.scan.catchup import REST_FACTOR, BookGuard
from scanner.scan.live import ChainScanner
from scanner.testkit.gateway import NewPayment, insert_payments
from scanner.testkit.settings import CHAIN
from tests.e2e.actions import pay
from tests.e2e.harness import Harness
from tests.e2e.test_catchup import block_time

PAGE = 8  # rows a catch-up page: the book below is four pages
OLD = ["0x" + f"{0xA0000 + n:040x}" for n in range(16)]  # paid before the book was written
NEW = ["0x" + f"{0xB0000 + n:040x}" for n in range(16)]  # paid while the book is looked at


async def _write_book(h: Harness, created: int) -> dict[str, str]:
    """One unseen payment of 1 token per address, OLD and NEW interleaved, written behind the
    cursor as a gateway's late commit would; their ids by address."""
    token_id = await h.token_id(h.token)
    book = {
        address: NewPayment(uuid.uuid4(), token_id, CHAIN, address, "1", created + 3600, created)
        for pair in zip(OLD, NEW, strict=True)
        for address in pair
    }
    async with h.engine.begin() as conn:
        await insert_payments(conn, list(book.values()))
    return {address: str(row.id) for address, row in book.items()}


async def _scanned(h: Harness, txs: list[str]) -> bool:
    return set(txs) <= {t["tx_hash"] for t in await h.transactions()}


async def test_new_blocks_are_credited_beside_the_first_look_and_each_transfer_once(
    h: Harness,
) -> None:
    await h.scan()
    old_txs = [pay(h, address, 1_000_000) for address in OLD]
    h.mine(2)
    await h.scan()  # nobody waits for OLD yet: nothing stored
    ids = await _write_book(h, block_time(h, old_txs[0]) - 5)
    new_txs = [pay(h, address, 1_000_000) for address in NEW]
    h.mine(1)
    scanner: ChainScanner = h.make_scanner()
    scanner.catch_up_page = PAGE
    await scanner.prepare()
    pages = 0
    unseen = payments.unseen

    async def page_held_until_scanned(*args: Any, **kwargs: Any) -> Any:
        """The look's second page waits until the first tick returned, its ranges committed."""
        nonlocal pages
        pages += 1
        if pages == 2:
            await first_done.wait()
        return await unseen(*args, **kwargs)

    first_done = asyncio.Event()
    payments.unseen = page_held_until_scanned
    try:
        first = await asyncio.wait_for(scanner.tick(), 60)  # not after the whole book
        assert (first.cursor, first.head) == (h.chain.head(), h.chain.head())
        assert await _scanned(h, new_txs)  # the scan credited unseen payments at once
        first_done.set()
        await scanner.book_looked_at()
    finally:
        payments.unseen = unseen
    assert pages > len(ids) // PAGE  # every page, and the one that finds none left

    rows = await h.transactions()
    assert sorted(t["tx_hash"] for t in rows) == sorted([*old_txs, *new_txs])  # each once
    for address, pid in ids.items():
        payment = await h.payment(pid)
        assert payment["amount_received"] == Decimal("1"), address
        assert [t["value"] for t in await h.transactions(pid)] == [1_000_000]
    await scanner.reader.client.aclose()


async def test_the_look_rests_between_pages_while_the_scan_is_behind() -> None:
    """New blocks go first: behind the head, the look waits REST_FACTOR times its last page
    between pages, so that it takes at most a tenth of the time (a page slows the scan about
    as long as it runs), and goes on at once when the scan reaches the head."""
    guard = BookGuard()
    started = time.monotonic()
    await guard.rest(0.05)
    rested = time.monotonic() - started
    assert rested >= REST_FACTOR * 0.05 * 0.9  # the scan is behind
    assert 0.05 / (0.05 + rested) <= 0.1
    asyncio.get_running_loop().call_later(0.1, guard.idle.set)
    started = time.monotonic()
    await guard.rest(10.0)
    assert time.monotonic() - started < 5.0  # the scan reached the head: no more rest
    started = time.monotonic()
    await guard.rest(10.0)
    assert time.monotonic() - started < 1.0
