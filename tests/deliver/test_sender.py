"""One attempt against a hostile receiver on loopback: whatever the size or pace of its answer,
the attempt ends within its timeout, having read a few kilobytes of the body at most."""

from __future__ import annotations

import asyncio

import pytest

from scanner.deliver.sender import Outcome, Sender
from scanner.deliver.worker import utc_now
from tests.deliver.support import RawReceiver, Script

HUGE = 200 * 2**20  # what a receiver claims to send; an uncapped read takes it all in ~1 s


async def attempt(receiver: RawReceiver, limit: float) -> Outcome:
    sender = Sender()
    try:
        return await sender.post(receiver.url(), b"{}", {}, limit, utc_now())
    finally:
        await sender.aclose()


async def endless_body(receiver: RawReceiver, writer: asyncio.StreamWriter) -> None:
    await receiver.write(writer, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HUGE)
    chunk = b"\0" * 2**20
    for _ in range(HUGE // len(chunk)):
        await receiver.write(writer, chunk)


async def test_an_answer_of_any_size_is_read_a_few_kilobytes_at_most() -> None:
    async with RawReceiver(endless_body) as receiver:
        outcome = await attempt(receiver, 10.0)
        await asyncio.sleep(0.2)  # the receiver's next writes find the connection closed
    assert (outcome.label, outcome.status) == ("delivered", 200)  # the status decides
    assert receiver.sent < 32 * 2**20, receiver.sent  # what kernel buffers took, not 200 MB
    assert outcome.seconds < 2.0


async def drip_head(receiver: RawReceiver, writer: asyncio.StreamWriter) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 100:
        await asyncio.sleep(0.3)
        await receiver.write(writer, bytes([byte]))


async def drip_body(receiver: RawReceiver, writer: asyncio.StreamWriter) -> None:
    await receiver.write(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):
        await asyncio.sleep(0.3)
        await receiver.write(writer, b"x")


@pytest.mark.parametrize("script", [drip_head, drip_body])
async def test_a_receiver_dripping_its_answer_cannot_hold_an_attempt_past_its_timeout(
    script: Script,
) -> None:
    async with RawReceiver(script) as receiver:
        outcome = await attempt(receiver, 1.0)
    assert outcome.label == "timeout" and outcome.error is not None
    assert outcome.error.startswith("timed out after 1 s")
    assert 0.95 <= outcome.seconds < 1.5, outcome.seconds


async def late_answer(receiver: RawReceiver, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(5.5)  # longer than any per-phase default of the HTTP client (5 s)
    await receiver.write(writer, b"HTTP/1.1 204 No Content\r\n\r\n")


async def test_an_answer_within_the_timeout_counts_however_long_it_took() -> None:
    async with RawReceiver(late_answer) as receiver:
        outcome = await attempt(receiver, 8.0)
    assert (outcome.label, outcome.status) == ("delivered", 204), outcome
    assert 5.4 < outcome.seconds < 8.0
