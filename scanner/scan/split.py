"""``scanner backfill --job-size N``: a large range cut into jobs that several processes share.

    plan the jobs (one ``backfill_jobs`` row per piece; a second worker joins them)
    ─▶ claim one, the earliest (``FOR UPDATE SKIP LOCKED``; never claimed, or its holder's lease
       expired)
    ─▶ scan it as a backfill does: its ranges are read at once (``concurrency`` ahead), and
       committed once every earlier job is done, each with the job's progress, fenced: the job
       must still be this worker's and stand where the range began
    ─▶ done; claim the next ─▶ … until every job is done (waiting for other workers' jobs, and
       taking over any whose lease expires: a killed worker's)

Commits go in block order across jobs because the rules are order-dependent (which of two open
payments on one address a transfer pays, whether a payment expired before a transfer came):
committed out of order, a job could expire a payment that an earlier job's transfer paid in time.
So the rows and events end as one backfill's would. What runs in parallel is the reading, the
long part of a backfill over history. A worker waiting for an earlier job that nobody holds any
more (its worker died) gives its own job back and takes the earlier one over.

The job lease lasts ``[cluster] lease_seconds`` and is renewed by a task while the job runs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from uuid import uuid4

import structlog

from scanner.core.ranges import split_range
from scanner.db import jobs
from scanner.errors import BackfillJobLost, ScannerError
from scanner.scan.backfill import Backfill, BackfillSummary
from scanner.scan.context import ChainContext
from scanner.scan.startup import check_chain_id

log = structlog.get_logger(__name__)


class _EarlierFree(Exception):
    """An earlier job nobody holds: this worker gives its job back and claims that one."""


class SplitBackfill:
    def __init__(self, backfill: Backfill, job_size: int, ttl: float) -> None:
        self.backfill = backfill
        self.job_size = job_size
        self.ttl = ttl
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"
        backfill.worker = self.worker
        self.name = backfill.settings.name
        self._pieces: list[tuple[int, int]] = []
        self.log = log.bind(chain=self.name, worker=self.worker)

    async def run(self, from_block: int, to_block: int) -> BackfillSummary:
        bf = self.backfill
        await check_chain_id(bf.reader, bf.settings)
        await bf.check_range(from_block, to_block)
        ctx = await bf._context()
        pieces = split_range(from_block, to_block, self.job_size)
        self._pieces = pieces
        async with bf.sessions() as session, session.begin():
            await jobs.plan(session, self.name, pieces)
        total = BackfillSummary(self.name, from_block, to_block, from_block)
        started = time.perf_counter()
        while True:
            async with bf.sessions() as session, session.begin():
                claimed = await jobs.claim(session, self.name, pieces, self.worker, self.ttl)
                left = 0 if claimed else await jobs.unfinished(session, self.name, pieces)
            if claimed is not None:
                total.absorb(await self._run_job(ctx, claimed))
            elif left == 0:
                break
            else:  # other workers hold the rest: wait, and take over a job whose lease expires
                await asyncio.sleep(self.ttl / 4)
        total.seconds = time.perf_counter() - started
        return total

    async def _run_job(self, ctx: ChainContext, job: jobs.Claimed) -> BackfillSummary:
        key = (job.from_block, job.to_block)
        self.log.info(
            "backfill_job_claimed",
            from_block=job.from_block,
            to_block=job.to_block,
            next_block=job.next_block,
            taken_over_from=job.taken_over,
        )
        summary = BackfillSummary(self.name, *key, job.next_block)
        self.backfill.before_commit = lambda: self._turn(key)
        try:
            async with self._renewing(key):
                if job.next_block <= job.to_block:
                    await self.backfill._scan(ctx, job.next_block, job.to_block, summary, None)
                async with self.backfill.sessions() as session, session.begin():
                    if not await jobs.finish_claimed(session, self.name, key, self.worker):
                        raise BackfillJobLost("taken over", chain=self.name, job=key)
        except BackfillJobLost:
            self.log.warning("backfill_job_lost", from_block=key[0], to_block=key[1])
            return summary
        except _EarlierFree:
            async with self.backfill.sessions() as session, session.begin():
                await jobs.release_claim(session, self.name, key, self.worker)
            self.log.info("backfill_job_yielded", from_block=key[0], to_block=key[1])
            return summary
        self.log.info("backfill_job_done", from_block=key[0], to_block=key[1])
        return summary

    async def _turn(self, key: tuple[int, int]) -> None:
        """Wait until every job before this one is done; raise when one of them is free."""
        while True:
            async with self.backfill.sessions() as session:
                waiting, free = await jobs.earlier(session, self.name, self._pieces, key[0])
            if waiting == 0:
                return
            if free:
                raise _EarlierFree()
            await asyncio.sleep(min(0.2, self.ttl / 8))

    @asynccontextmanager
    async def _renewing(self, key: tuple[int, int]) -> AsyncIterator[None]:
        async def renew() -> None:
            while True:
                await asyncio.sleep(self.ttl / 4)
                with suppress(ScannerError):  # the fence decides; a failed renewal is retried
                    async with self.backfill.sessions() as session, session.begin():
                        await jobs.renew(session, self.name, key, self.worker, self.ttl)

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
