"""Periodic background tasks that run in the trio nursery beside pyfuse3.main."""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import TYPE_CHECKING

import redis
import trio

if TYPE_CHECKING:
    from .fs import CacheFS

log = logging.getLogger(__name__)


async def janitor(fs: CacheFS) -> None:
    """Every cleanup_interval: expire chunks past their tier's TTL, persist indexes."""
    while True:
        await trio.sleep(fs.cfg.monitoring.cleanup_interval)
        await clean_once(fs)


async def clean_once(fs: CacheFS) -> None:
    expired = fs.ram.expire(time.monotonic() - fs.cfg.tiers["ram"].ttl)
    for tier in fs.disks.values():
        if not tier.ready.is_set():
            continue
        expired += await trio.to_thread.run_sync(tier.sweep_expired, limiter=fs.disk_limiter)
        await trio.to_thread.run_sync(tier.save_index, limiter=fs.disk_limiter)
    if expired:
        log.info("janitor: %d chunks expired", expired)


class MetadataSaver:
    """Writes the metadata cache's journal to its store, about once a second.

    Off the hot path: handlers only touch memory. A failing store (disk full)
    costs persistence, never a request; it is logged once per outage.
    """

    INTERVAL = 1.0

    def __init__(self, fs: CacheFS) -> None:
        self.fs = fs
        self._failing = False

    async def run(self) -> None:
        while True:
            await trio.sleep(self.INTERVAL)
            await self.save_once()

    async def save_once(self) -> None:
        meta, store = self.fs.meta, self.fs.meta_store
        meta.trim()
        journal = meta.journal.take()
        if store is None or not len(journal):
            return
        try:
            await trio.to_thread.run_sync(store.write, journal, limiter=self.fs.disk_limiter)
        except (sqlite3.Error, OSError) as exc:
            if not self._failing:
                log.warning("metadata store: cannot write (%s); the cache keeps working", exc)
            self._failing = True
            return
        if self._failing:
            log.info("metadata store: writing again")
        self._failing = False


class Flusher:
    """Hands the stats deltas to the backend every stats_interval.

    A failing backend (Redis gone) never blocks anything: the batch goes back,
    the outage is logged once, and flushes are retried with a growing delay
    (1 s, 2 s, ... up to the interval) until one succeeds.
    """

    def __init__(self, fs: CacheFS) -> None:
        self.fs = fs
        self.failing = False
        # One flush at a time: a hung Redis holds one thread, never the shared pool.
        self._limiter = trio.CapacityLimiter(1)

    async def run(self) -> None:
        interval = self.fs.cfg.monitoring.stats_interval
        delay = interval
        while True:
            await trio.sleep(delay)
            if await self.flush_once():
                delay = interval
            else:
                delay = min(interval, 1.0 if delay >= interval else delay * 2)

    async def flush_once(self) -> bool:
        stats, backend = self.fs.stats, self.fs.stats_backend
        batch = stats.take_batch()
        if not batch:
            return True
        try:
            await trio.to_thread.run_sync(backend.flush, batch, limiter=self._limiter)
        except (redis.RedisError, OSError) as exc:
            stats.give_back(batch)
            if not self.failing:
                log.warning("stats: %s backend unavailable, keeping counts: %s", backend.name, exc)
            self.failing = True
            return False
        if self.failing:
            log.warning("stats: %s backend is back; pending counts flushed", backend.name)
        self.failing = False
        return True


MIGRATE_INTERVAL = 2.0  # seconds between migrator passes
MIGRATE_BYTES_PER_SECOND = 64 * 1024 * 1024  # the migrator's I/O budget
BUSY_FILLS = 2  # chunk fills in flight that mean "foreground I/O is heavy: wait"


class Migrator:
    """Moves chunks up a tier when their score earns it (hdd -> ssd).

    Demotion is the other half: a chunk the SSD evicts goes down to the HDD
    when its score still passes half of min_confidence (DiskTier.demote_to).
    The migrator stays out of the way of readers: it skips a pass while
    foreground fills are in flight and moves at most its byte budget a pass.
    """

    def __init__(self, fs: CacheFS) -> None:
        self.fs = fs

    async def run(self) -> None:
        while True:
            await trio.sleep(MIGRATE_INTERVAL)
            if self.fs.cache.fills_in_flight() >= BUSY_FILLS:
                continue
            await trio.to_thread.run_sync(self.promote_once, limiter=self.fs.disk_limiter)

    def promote_once(self) -> int:
        """One pass (blocking, in a worker thread); returns how many chunks moved."""
        lower, upper = self.fs.disks["hdd"], self.fs.disks["ssd"]
        if not (lower.ready.is_set() and upper.ready.is_set()):
            return 0
        budget = MIGRATE_BYTES_PER_SECOND * MIGRATE_INTERVAL
        weakest = upper.weakest_score()
        moved = 0
        for digest, score, size in lower.hot_chunks(self.fs.cfg.prediction.min_confidence):
            if size > budget:
                break
            # room in the SSD, or this chunk outranks what the SSD would evict
            if not upper.has_room(size) and score <= weakest:
                break
            if lower.move_digest_to(digest, upper):
                self.fs.stats.add("promotions")
                budget -= size
                moved += 1
        return moved
