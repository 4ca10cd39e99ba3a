"""Periodic background tasks that run in the trio nursery beside pyfuse3.main."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Mapping

import redis
import trio

from cachefs.data.chunkcache import ChunkCache
from cachefs.data.tiers.disk import DiskTier
from cachefs.data.tiers.promotion import (
    DEFAULT_MOVE_COST,
    DEFAULT_REWRITES_PER_DAY,
    promotion_bar,
    upper_tier_budget,
)
from cachefs.data.tiers.ram import RamTier
from cachefs.meta.cache import LateRestore, MetadataCache
from cachefs.meta.store import MetadataStore, collector_paused
from cachefs.stats.counters import Stats, StatsBackend

log = logging.getLogger(__name__)


class Janitor:
    """Every cleanup_interval: expire chunks past their tier's TTL, persist indexes."""

    def __init__(
        self,
        ram: RamTier,
        ram_ttl: float,
        disks: Mapping[str, DiskTier],
        disk_limiter: trio.CapacityLimiter,
        interval: float,
    ) -> None:
        self.ram, self.ram_ttl, self.disks = ram, ram_ttl, disks
        self.disk_limiter, self.interval = disk_limiter, interval

    async def run(self) -> None:
        while True:
            await trio.sleep(self.interval)
            await self.clean_once()

    async def clean_once(self) -> None:
        expired = self.ram.expire(time.monotonic() - self.ram_ttl)
        for tier in self.disks.values():
            if not tier.ready.is_set():
                continue
            expired += await trio.to_thread.run_sync(tier.sweep_expired, limiter=self.disk_limiter)
            await trio.to_thread.run_sync(tier.save_index, limiter=self.disk_limiter)
        if expired:
            log.info("janitor: %d chunks expired", expired)


class MetadataLoader:
    """Reads the metadata store into a cache that serves already (the origin was
    online at mount, so nothing needed the store before answering).

    Batches are read in a worker thread and merged on the trio thread between
    requests (``LateRestore``: what the mount learnt meanwhile wins). ``wait()``
    returns once the store is in: the metadata warm-up and the pins' re-apply,
    which walk what the store brought back, wait for it.
    """

    BATCH = 4096  # rows merged at a time: a few milliseconds of the trio thread

    def __init__(
        self, meta: MetadataCache, store: MetadataStore, disk_limiter: trio.CapacityLimiter
    ) -> None:
        self.meta, self.store, self.disk_limiter = meta, store, disk_limiter
        self._done = trio.Event()

    async def wait(self) -> None:
        await self._done.wait()

    async def run(self) -> None:
        started = trio.current_time()
        merge = LateRestore(self.meta)
        batches = self.store.row_batches(self.BATCH)
        try:
            while batch := await trio.to_thread.run_sync(
                next, batches, None, limiter=self.disk_limiter
            ):
                with collector_paused():
                    merge.add(batch)
                await trio.lowlevel.checkpoint()
            listed = await trio.to_thread.run_sync(
                self.store.listed_dirs, limiter=self.disk_limiter
            )
            merge.finish(listed)
        except (sqlite3.Error, OSError) as exc:
            log.warning("metadata store: cannot read it (%s); starting with what is read", exc)
            merge.finish(())
        finally:
            batches.close()
            self.meta.late = None
            self._done.set()
        took = trio.current_time() - started
        log.info("metadata store: %d entries restored in %.1fs", merge.restored, took)


class MetadataSaver:
    """Writes the metadata cache's journal to its store, about once a second.

    Off the hot path: handlers only touch memory. A failing store (disk full)
    costs persistence, never a request; it is logged once per outage.
    """

    INTERVAL = 1.0

    def __init__(
        self,
        meta: MetadataCache,
        store: MetadataStore | None,
        disk_limiter: trio.CapacityLimiter,
    ) -> None:
        self.meta, self.store, self.disk_limiter = meta, store, disk_limiter
        self._failing = False

    async def run(self) -> None:
        while True:
            await trio.sleep(self.INTERVAL)
            await self.save_once()

    async def save_once(self) -> None:
        meta, store = self.meta, self.store
        meta.trim()
        journal = meta.journal.take()
        if store is None or not len(journal):
            return
        try:
            await trio.to_thread.run_sync(store.write, journal, limiter=self.disk_limiter)
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

    def __init__(self, stats: Stats, backend: StatsBackend, interval: float) -> None:
        self.stats, self.backend, self.interval = stats, backend, interval
        self.failing = False
        # One flush at a time: a hung Redis holds one thread, never the shared pool.
        self._limiter = trio.CapacityLimiter(1)

    async def run(self) -> None:
        interval = self.interval
        delay = interval
        while True:
            await trio.sleep(delay)
            if await self.flush_once():
                delay = interval
            else:
                delay = min(interval, 1.0 if delay >= interval else delay * 2)

    async def flush_once(self) -> bool:
        stats, backend = self.stats, self.backend
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
    """Moves chunks up a tier when the reads they should get there pay for the move
    (hdd -> ssd; data/tiers/promotion.py), within an hourly byte budget.

    Demotion is the other half: a chunk the SSD evicts goes down to the HDD
    when its score still passes half of promote_threshold (DiskTier.demote_to).
    The migrator stays out of the way of readers: it skips a pass while
    foreground fills are in flight and moves at most its byte budget a pass.
    """

    def __init__(
        self,
        cache: ChunkCache,
        lower: DiskTier,
        upper: DiskTier,
        threshold: float,
        stats: Stats,
        disk_limiter: trio.CapacityLimiter,
        move_cost: float = DEFAULT_MOVE_COST,
        rewrites_per_day: float = DEFAULT_REWRITES_PER_DAY,
    ) -> None:
        self.cache, self.lower, self.upper = cache, lower, upper
        self.threshold, self.stats, self.disk_limiter = threshold, stats, disk_limiter
        self.bar = promotion_bar(threshold, move_cost)  # the score a chunk needs to move up
        # bytes an hour it may move up
        self.budget = upper_tier_budget(upper.cfg.max_size, rewrites_per_day)

    async def run(self) -> None:
        while True:
            await trio.sleep(MIGRATE_INTERVAL)
            if self.cache.fills_in_flight() >= BUSY_FILLS:
                continue
            await trio.to_thread.run_sync(self.promote_once, limiter=self.disk_limiter)

    def promote_once(self) -> int:
        """One pass (blocking, in a worker thread); returns how many chunks moved."""
        lower, upper = self.lower, self.upper
        if not (lower.ready.is_set() and upper.ready.is_set()):
            return 0
        budget = min(MIGRATE_BYTES_PER_SECOND * MIGRATE_INTERVAL, self.budget.available())
        weakest = upper.weakest_score()
        moved = 0
        for digest, score, size in lower.hot_chunks(self.bar):
            if size > budget:
                break
            # room in the SSD, or this chunk outranks what the SSD would evict
            if not upper.has_room(size) and score <= weakest:
                break
            if lower.move_digest_to(digest, upper):
                self.stats.add("promotions")
                budget -= size
                self.budget.spend(size)
                moved += 1
        return moved
